//! Field operations: the work-order state machine, double booking under concurrency, the
//! references checked with core, the technician view, certifications and waste manifests.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use crm_auth::token::TokenSigner;
use crm_proto::common_v1::PostalAddress;
use crm_proto::core_v1::property_service_client::PropertyServiceClient;
use crm_proto::core_v1::{CreatePropertyRequest, DeletePropertyRequest, Property};
use crm_proto::fieldops_v1::certification_service_client::CertificationServiceClient;
use crm_proto::fieldops_v1::disposal_facility_service_client::DisposalFacilityServiceClient;
use crm_proto::fieldops_v1::license_service_client::LicenseServiceClient;
use crm_proto::fieldops_v1::scheduling_service_client::SchedulingServiceClient;
use crm_proto::fieldops_v1::shift_service_client::ShiftServiceClient;
use crm_proto::fieldops_v1::technician_service_client::TechnicianServiceClient;
use crm_proto::fieldops_v1::truck_service_client::TruckServiceClient;
use crm_proto::fieldops_v1::waste_manifest_service_client::WasteManifestServiceClient;
use crm_proto::fieldops_v1::work_order_service_client::WorkOrderServiceClient;
use crm_proto::fieldops_v1::{
    BookWorkOrderRequest, Certification, CertificationKind, CreateCertificationRequest,
    CreateDisposalFacilityRequest, CreateShiftRequest, CreateTechnicianRequest, CreateTruckRequest,
    CreateWasteManifestRequest, CreateWorkOrderRequest, DeleteWasteManifestRequest,
    DisposalFacility, GetWasteManifestRequest, GetWorkOrderRequest,
    GetWorkOrderTransitionTableRequest, JobType, ListAvailableSlotsRequest,
    ListWorkOrderEventsRequest, ListWorkOrdersRequest, RecordDisposalRequest, SchedulingSettings,
    Shift, Technician, TransitionWorkOrderRequest, Truck, UpdateSchedulingSettingsRequest,
    UpdateWasteManifestRequest, UpdateWorkOrderRequest, WasteKind, WasteManifest, WorkOrder,
    WorkOrderPriority, WorkOrderStatus,
};
use crm_proto::fieldops_v1::{CreateLicenseRequest, License, ListExpiringCredentialsRequest};
use crm_testkit::TestServer;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tonic::transport::Channel;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::support::{Env, Suite, SuiteOptions, count, reason};

use WorkOrderStatus as S;

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    crm_platform::api::time::timestamp(t)
}

/// Noon UTC on day `day` of March 2027, plus `hours`.
fn at(day: u32, hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 3, day, 12, 0, 0).unwrap() + chrono::Duration::hours(hours)
}

/// An organization with a customer, a property, a truck and a disposal facility.
struct Ops {
    env: Env,
    customer: String,
    property: String,
    truck: String,
    facility: String,
}

impl Ops {
    async fn new() -> Self {
        Self::on(Env::new().await).await
    }

    async fn on(env: Env) -> Self {
        let customer = env.create("Harbor Diner").await.name;
        let property = PropertyServiceClient::new(env.server.channel.clone())
            .create_property(env.req(CreatePropertyRequest {
                parent: env.parent(),
                property: Some(property(&customer)),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .name;
        let truck = TruckServiceClient::new(env.server.channel.clone())
            .create_truck(env.req(CreateTruckRequest {
                parent: env.parent(),
                truck: Some(Truck {
                    display_name: "Truck 1".into(),
                    plate: "TX-1".into(),
                    tank_capacity_gallons: 3000,
                    active: true,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .name;
        let facility = DisposalFacilityServiceClient::new(env.server.channel.clone())
            .create_disposal_facility(env.req(CreateDisposalFacilityRequest {
                parent: env.parent(),
                disposal_facility: Some(DisposalFacility {
                    display_name: "Walnut Creek Plant".into(),
                    address: Some(address()),
                    permit_number: "WQ-0001".into(),
                    accepted_waste_kinds: vec![WasteKind::Septage as i32, WasteKind::Grease as i32],
                    active: true,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .name;
        Self {
            env,
            customer,
            property,
            truck,
            facility,
        }
    }

    fn channel(&self) -> Channel {
        self.env.server.channel.clone()
    }

    fn orders(&self) -> WorkOrderServiceClient<Channel> {
        WorkOrderServiceClient::new(self.channel())
    }

    fn manifests(&self) -> WasteManifestServiceClient<Channel> {
        WasteManifestServiceClient::new(self.channel())
    }

    /// An active member of the organization with `roles`, and a token for them.
    async fn member(&self, roles: &[&str]) -> (Uuid, String) {
        let identity = self.env.server.identity();
        let user = crm_identity::bootstrap::ensure_member(
            &identity.pool,
            &identity.hasher,
            &crm_identity::bootstrap::Member {
                org: self.env.org,
                org_display_name: "Harbor Septic",
                email: &format!("{}@example.com", Uuid::now_v7().simple()),
                password: "a long enough password",
                roles,
                reset_password: false,
            },
        )
        .await
        .unwrap();
        let server = &self.env.server;
        let claims = TokenSigner::user_claims(
            &server.verifier_settings,
            user,
            self.env.org,
            roles,
            Duration::from_secs(300),
        );
        (user, server.signer.sign(&claims))
    }

    /// A technician (a new member with the technician role) and their token.
    async fn technician(&self) -> (String, String) {
        let (user, token) = self.member(&["fieldops.technician"]).await;
        let t = TechnicianServiceClient::new(self.channel())
            .create_technician(self.env.req(CreateTechnicianRequest {
                parent: self.env.parent(),
                technician: Some(Technician {
                    user: format!("users/{user}"),
                    display_name: "Sam Ortiz".into(),
                    skills: vec![JobType::Pumping as i32, JobType::GreaseTrap as i32],
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        (t.name, token)
    }

    fn order(
        &self,
        job: JobType,
        technicians: &[&str],
        window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> WorkOrder {
        WorkOrder {
            job_type: job as i32,
            summary: "Pump the tank".into(),
            customer: self.customer.clone(),
            property: self.property.clone(),
            technicians: technicians.iter().map(|t| (*t).to_owned()).collect(),
            scheduled_start_time: window.map(|w| ts(w.0)),
            scheduled_end_time: window.map(|w| ts(w.1)),
            ..Default::default()
        }
    }

    async fn create(&self, order: WorkOrder) -> Result<WorkOrder, Status> {
        self.orders()
            .create_work_order(self.env.req(CreateWorkOrderRequest {
                parent: self.env.parent(),
                work_order: Some(order),
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn transition(
        &self,
        token: &str,
        name: &str,
        to: S,
        reason: &str,
    ) -> Result<WorkOrder, Status> {
        self.orders()
            .transition_work_order(TestServer::request(
                token,
                TransitionWorkOrderRequest {
                    name: name.to_owned(),
                    to_status: to as i32,
                    reason: reason.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn get(&self, token: &str, name: &str) -> Result<WorkOrder, Status> {
        self.orders()
            .get_work_order(TestServer::request(
                token,
                GetWorkOrderRequest {
                    name: name.to_owned(),
                },
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn manifest(&self, work_order: &str, technician: &str, gallons: i32) -> WasteManifest {
        self.manifests()
            .create_waste_manifest(self.env.req(CreateWasteManifestRequest {
                parent: self.env.parent(),
                waste_manifest: Some(WasteManifest {
                    work_order: work_order.to_owned(),
                    truck: self.truck.clone(),
                    technician: technician.to_owned(),
                    disposal_facility: self.facility.clone(),
                    waste_kind: WasteKind::Grease as i32,
                    gallons,
                    pickup_time: Some(ts(Utc::now() - chrono::Duration::hours(2))),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
    }

    async fn record(&self, manifest: &str, ticket: &str) -> Result<WasteManifest, Status> {
        self.manifests()
            .record_disposal(self.env.req(RecordDisposalRequest {
                name: manifest.to_owned(),
                ticket_number: ticket.to_owned(),
                disposal_time: Some(ts(Utc::now() - chrono::Duration::minutes(30))),
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn work_order_rows(&self) -> i64 {
        count(
            &self.env.db,
            "SELECT count(*) AS n FROM fieldops.work_orders",
        )
        .await
    }
}

fn address() -> PostalAddress {
    PostalAddress {
        region_code: "US".into(),
        address_lines: vec!["12 Harbor Rd".into()],
        ..Default::default()
    }
}

fn property(customer: &str) -> Property {
    Property {
        customer: customer.to_owned(),
        display_name: "Kitchen".into(),
        address: Some(address()),
        zone: "north".into(),
        ..Default::default()
    }
}

#[track_caller]
fn refused(r: &Result<WorkOrder, Status>, code: Code, why: &str) {
    match r {
        Err(s) => {
            assert_eq!(s.code(), code, "{s:?}");
            assert_eq!(reason(s), why, "{s:?}");
        }
        Ok(w) => panic!("accepted, expected {code:?} {why}: {w:?}"),
    }
}

/// The path from a new work order (a draft) to each status, through allowed moves only.
fn path_to(status: S) -> Vec<S> {
    let working = vec![S::Scheduled, S::Enroute, S::OnSite, S::InProgress];
    match status {
        S::Unspecified | S::Draft => Vec::new(),
        S::Scheduled => vec![S::Scheduled],
        S::Confirmed => vec![S::Scheduled, S::Confirmed],
        S::Enroute => vec![S::Scheduled, S::Enroute],
        S::OnSite => vec![S::Scheduled, S::Enroute, S::OnSite],
        S::InProgress => working,
        S::OnHold => [working, vec![S::OnHold]].concat(),
        S::Completed => [working, vec![S::Completed]].concat(),
        S::Canceled => vec![S::Canceled],
        S::RequiresFollowup => [working, vec![S::RequiresFollowup]].concat(),
    }
}

const ALL: [S; 10] = [
    S::Draft,
    S::Scheduled,
    S::Confirmed,
    S::Enroute,
    S::OnSite,
    S::InProgress,
    S::OnHold,
    S::Completed,
    S::Canceled,
    S::RequiresFollowup,
];

#[tokio::test]
async fn every_move_off_the_table_is_refused_and_every_move_on_it_is_recorded() {
    let ops = Ops::new().await;
    let token = ops.env.token.clone();
    let (tech, _) = ops.technician().await;
    let table = ops
        .orders()
        .get_work_order_transition_table(ops.env.req(GetWorkOrderTransitionTableRequest {
            name: format!("{}/workOrderTransitionTable", ops.env.parent()),
        }))
        .await
        .unwrap()
        .into_inner()
        .transitions;
    let allowed = |from: S, to: S| {
        table
            .iter()
            .any(|t| t.from_status == from as i32 && t.to_status == to as i32)
    };
    // Spot checks of the table itself.
    assert!(!allowed(S::Draft, S::Completed));
    assert!(!allowed(S::Draft, S::Enroute));
    assert!(allowed(S::InProgress, S::Completed));
    for closed in [S::Completed, S::Canceled, S::RequiresFollowup] {
        assert!(
            ALL.iter().all(|to| !allowed(closed, *to)),
            "{closed:?} is not closed"
        );
    }

    for (day, from) in (1..).zip(ALL) {
        // A repair needs no manifest; each work order gets its own day.
        let window = Some((at(day, 0), at(day, 2)));
        let wo = ops
            .create(ops.order(JobType::Repair, &[&tech], window))
            .await
            .unwrap();
        for step in path_to(from) {
            ops.transition(&token, &wo.name, step, "because")
                .await
                .unwrap_or_else(|e| {
                    panic!("{from:?}: the allowed move to {step:?} was refused: {e:?}")
                });
        }
        let before = ops.get(&token, &wo.name).await.unwrap();
        assert_eq!(before.status, from as i32);
        for to in ALL.into_iter().filter(|to| !allowed(from, *to)) {
            let r = ops.transition(&token, &wo.name, to, "because").await;
            let s = r.expect_err(&format!("{from:?} → {to:?} was accepted"));
            assert_eq!(
                s.code(),
                Code::FailedPrecondition,
                "{from:?} → {to:?}: {s:?}"
            );
            assert_eq!(reason(&s), "TRANSITION_NOT_ALLOWED", "{from:?} → {to:?}");
            assert!(s.message().contains(to.as_str_name()), "{}", s.message());
        }
        assert_eq!(
            ops.get(&token, &wo.name).await.unwrap(),
            before,
            "{from:?}: a refused move changed it"
        );

        // The history: the creation, then each move, with its actor and time.
        let events = ops
            .orders()
            .list_work_order_events(ops.env.req(ListWorkOrderEventsRequest {
                parent: wo.name.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .work_order_events;
        let path = path_to(from);
        assert_eq!(events.len(), path.len() + 1, "{from:?}: {events:?}");
        let mut prev = S::Unspecified;
        for (e, to) in events.iter().zip([vec![S::Draft], path].concat()) {
            assert_eq!((e.from_status, e.to_status), (prev as i32, to as i32));
            assert!(e.actor.starts_with("users/"), "{e:?}");
            assert!(e.create_time.is_some());
            if matches!(
                to,
                S::Enroute | S::OnSite | S::InProgress | S::Completed | S::RequiresFollowup
            ) {
                assert_eq!(e.technician_times.len(), 1, "{to:?}: {e:?}");
                assert_eq!(e.technician_times[0].technician, tech);
            }
            prev = to;
        }
        if from == S::RequiresFollowup {
            let follow = &events.last().unwrap().follow_up;
            let f = ops.get(&token, follow).await.unwrap();
            assert_eq!(f.follow_up_of, wo.name);
            assert_eq!(f.status, S::Draft as i32);
            assert_eq!(
                (f.customer.as_str(), f.property.as_str()),
                (wo.customer.as_str(), wo.property.as_str())
            );
        }
    }
    // Moves that need evidence say which.
    let bare = ops
        .create(ops.order(JobType::Repair, &[], None))
        .await
        .unwrap();
    refused(
        &ops.transition(&token, &bare.name, S::Scheduled, "").await,
        Code::FailedPrecondition,
        "WINDOW_AND_TECHNICIAN_REQUIRED",
    );
    refused(
        &ops.transition(&token, &bare.name, S::Canceled, "").await,
        Code::FailedPrecondition,
        "REASON_REQUIRED",
    );
    // A closed work order does not change.
    let done = ops
        .create(ops.order(JobType::Repair, &[], None))
        .await
        .unwrap();
    let done = ops
        .transition(&token, &done.name, S::Canceled, "duplicate")
        .await
        .unwrap();
    let mut changed = done.clone();
    changed.notes = "late note".into();
    let r = ops
        .orders()
        .update_work_order(ops.env.req(UpdateWorkOrderRequest {
            work_order: Some(changed),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["notes".into()],
            }),
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner);
    refused(&r, Code::FailedPrecondition, "WORK_ORDER_CLOSED");
}

#[tokio::test]
async fn a_pumping_job_completes_only_with_a_recorded_manifest_and_manifests_are_final() {
    let ops = Ops::new().await;
    let token = ops.env.token.clone();
    let (tech, tech_token) = ops.technician().await;
    let wo = ops
        .create(ops.order(JobType::GreaseTrap, &[&tech], Some((at(3, 0), at(3, 2)))))
        .await
        .unwrap();
    ops.transition(&token, &wo.name, S::Scheduled, "")
        .await
        .unwrap();
    for step in [S::Enroute, S::OnSite, S::InProgress] {
        // The assigned technician moves their own job.
        ops.transition(&tech_token, &wo.name, step, "")
            .await
            .unwrap();
    }
    refused(
        &ops.transition(&tech_token, &wo.name, S::Completed, "")
            .await,
        Code::FailedPrecondition,
        "WASTE_MANIFEST_REQUIRED",
    );
    let manifest = ops.manifest(&wo.name, &tech, 950).await;
    assert_eq!(manifest.generator_customer, ops.customer);
    assert_eq!(manifest.generator_property, ops.property);
    refused(
        &ops.transition(&tech_token, &wo.name, S::Completed, "")
            .await,
        Code::FailedPrecondition,
        "WASTE_MANIFEST_REQUIRED",
    );
    let recorded = ops.record(&manifest.name, "WC-88121").await.unwrap();
    assert!(recorded.disposal_time.is_some());
    let done = ops
        .transition(&tech_token, &wo.name, S::Completed, "")
        .await
        .unwrap();
    assert_eq!(done.status, S::Completed as i32);
    assert_eq!(done.gallons_pumped, 950, "gallons from the manifest");

    // Recorded is final: the service refuses changes and deletion...
    let mut changed = recorded.clone();
    changed.gallons = 10;
    let r = ops
        .manifests()
        .update_waste_manifest(ops.env.req(UpdateWasteManifestRequest {
            waste_manifest: Some(changed),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["gallons".into()],
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (r.code(), reason(&r).as_str()),
        (Code::FailedPrecondition, "MANIFEST_RECORDED")
    );
    let r = ops
        .manifests()
        .delete_waste_manifest(ops.env.req(DeleteWasteManifestRequest {
            name: recorded.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        (r.code(), reason(&r).as_str()),
        (Code::FailedPrecondition, "MANIFEST_RECORDED")
    );
    assert_eq!(
        ops.record(&recorded.name, "again")
            .await
            .map_err(|s| reason(&s))
            .unwrap_err(),
        "MANIFEST_RECORDED"
    );

    // ... and so does the database, to the app role itself.
    let mut app = AsyncPgConnection::establish(&ops.env.db.app_url("fieldops"))
        .await
        .unwrap();
    let id = recorded.name.rsplit('/').next().unwrap().to_owned();
    app.batch_execute("BEGIN").await.unwrap();
    diesel::sql_query("SELECT set_config('app.org_id', $1, true)")
        .bind::<Text, _>(ops.env.org.to_string())
        .execute(&mut app)
        .await
        .unwrap();
    app.batch_execute("SAVEPOINT s").await.unwrap();
    let updated = diesel::sql_query(
        "UPDATE fieldops.waste_manifests SET gallons = 1, delete_time = now() WHERE id = $1::uuid",
    )
    .bind::<Text, _>(&id)
    .execute(&mut app)
    .await;
    assert!(
        updated.is_err(),
        "the app role changed a recorded manifest: {updated:?}"
    );
    app.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    let deleted = diesel::sql_query("DELETE FROM fieldops.waste_manifests WHERE id = $1::uuid")
        .bind::<Text, _>(&id)
        .execute(&mut app)
        .await;
    assert!(deleted.is_err(), "the app role may delete manifests");
    app.batch_execute("ROLLBACK").await.unwrap();

    // A correction is a new manifest; the original stays as it was.
    let correction = ops
        .manifests()
        .create_waste_manifest(ops.env.req(CreateWasteManifestRequest {
            parent: ops.env.parent(),
            waste_manifest: Some(WasteManifest {
                corrects: recorded.name.clone(),
                gallons: 900,
                ..recorded.clone()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(correction.corrects, recorded.name);
    assert!(
        correction.disposal_time.is_none(),
        "a correction is recorded on its own"
    );
    let original = ops
        .manifests()
        .get_waste_manifest(ops.env.req(GetWasteManifestRequest {
            name: recorded.name.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(original, recorded, "the original changed");
    // A second correction of the same original is refused: correct the correction.
    let again = ops
        .manifests()
        .create_waste_manifest(ops.env.req(CreateWasteManifestRequest {
            parent: ops.env.parent(),
            waste_manifest: Some(WasteManifest {
                corrects: recorded.name.clone(),
                ..recorded.clone()
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "ALREADY_CORRECTED");
}

#[tokio::test]
async fn fifty_concurrent_bookings_of_one_technician_leave_no_overlap() {
    let ops = Ops::new().await;
    let (tech, _) = ops.technician().await;
    // 25 one-hour slots, each asked for twice: exactly one booking per slot can win.
    let mut orders = Vec::new();
    for k in 0..50 {
        let slot = k / 2;
        let window = (at(10, slot), at(10, slot + 1));
        orders.push(
            ops.create(ops.order(JobType::Pumping, &[&tech], Some(window)))
                .await
                .unwrap()
                .name,
        );
    }
    let mut tasks = Vec::new();
    for name in orders {
        let (channel, token) = (ops.channel(), ops.env.token.clone());
        tasks.push(tokio::spawn(async move {
            WorkOrderServiceClient::new(channel)
                .transition_work_order(TestServer::request(
                    &token,
                    TransitionWorkOrderRequest {
                        name,
                        to_status: S::Scheduled as i32,
                        ..Default::default()
                    },
                ))
                .await
        }));
    }
    let (mut booked, mut refused_count) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => booked += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                assert_eq!(reason(&s), "TECHNICIAN_DOUBLE_BOOKED", "{s:?}");
                assert!(
                    s.message().contains("/workOrders/"),
                    "names the other: {}",
                    s.message()
                );
                refused_count += 1;
            }
        }
    }
    assert_eq!((booked, refused_count), (25, 25));
    let overlaps = count(
        &ops.env.db,
        "SELECT count(*) AS n FROM fieldops.work_order_assignments a \
           JOIN fieldops.work_order_assignments b \
             ON a.organization_id = b.organization_id AND a.technician_id = b.technician_id \
            AND a.work_order_id < b.work_order_id \
            AND tstzrange(a.start_time, a.end_time) && tstzrange(b.start_time, b.end_time) \
          WHERE a.active AND b.active",
    )
    .await;
    assert_eq!(overlaps, 0);
    let scheduled = count(
        &ops.env.db,
        "SELECT count(*) AS n FROM fieldops.work_orders WHERE status = 2",
    )
    .await;
    assert_eq!(
        scheduled, 25,
        "every refused booking left its work order a draft"
    );
}

#[tokio::test]
async fn a_work_order_names_only_live_core_records_of_its_own_organization() {
    let ops = Ops::new().await;
    let rows = ops.work_order_rows().await;
    // Another organization's real customer and property.
    let other = Ops::on(Env::new().await).await;
    let mut foreign = ops.order(JobType::Pumping, &[], None);
    foreign.customer = other.customer.clone();
    foreign.property = other.property.clone();
    let r = ops.create(foreign).await.unwrap_err();
    assert_eq!(r.code(), Code::InvalidArgument, "{r:?}");
    // A property that does not exist.
    let mut missing = ops.order(JobType::Pumping, &[], None);
    missing.property = format!("{}/properties/{}", ops.env.parent(), Uuid::now_v7());
    refused(
        &ops.create(missing).await,
        Code::FailedPrecondition,
        "REFERENCE_NOT_FOUND",
    );
    // A deleted property.
    let mut props = PropertyServiceClient::new(ops.channel());
    let doomed = props
        .create_property(ops.env.req(CreatePropertyRequest {
            parent: ops.env.parent(),
            property: Some(property(&ops.customer)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    props
        .delete_property(ops.env.req(DeletePropertyRequest {
            name: doomed.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut gone = ops.order(JobType::Pumping, &[], None);
    gone.property = doomed.name.clone();
    refused(
        &ops.create(gone).await,
        Code::FailedPrecondition,
        "REFERENCE_DELETED",
    );
    // Another customer's property.
    let second = ops.env.create("Second Customer").await.name;
    let mut mismatched = ops.order(JobType::Pumping, &[], None);
    mismatched.customer = second;
    refused(
        &ops.create(mismatched).await,
        Code::FailedPrecondition,
        "PROPERTY_OF_ANOTHER_CUSTOMER",
    );
    assert_eq!(
        ops.work_order_rows().await,
        rows,
        "a refused work order was written"
    );
}

#[tokio::test]
async fn with_core_down_a_work_order_is_unavailable_and_nothing_is_written() {
    // Fieldops looks for core on a port where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let env = Env::with(SuiteOptions {
        core_url: Some(url),
        ..SuiteOptions::default()
    })
    .await;
    let ops = Ops::on(env).await;
    let r = ops.create(ops.order(JobType::Pumping, &[], None)).await;
    refused(&r, Code::Unavailable, "CORE_UNAVAILABLE");
    assert_eq!(ops.work_order_rows().await, 0);
}

#[tokio::test]
async fn inspections_go_only_to_technicians_with_a_valid_certification() {
    let ops = Ops::new().await;
    let mut certs = CertificationServiceClient::new(ops.channel());
    let (none, _) = ops.technician().await;
    let (expired, _) = ops.technician().await;
    let (valid, _) = ops.technician().await;
    for (tech, expires) in [(&expired, at(1, -24 * 30)), (&valid, at(1, 24 * 365))] {
        certs
            .create_certification(ops.env.req(CreateCertificationRequest {
                parent: ops.env.parent(),
                certification: Some(Certification {
                    technician: tech.clone(),
                    kind: CertificationKind::Inspection as i32,
                    number: format!("NAWT-{}", Uuid::now_v7().simple()),
                    expire_time: Some(ts(expires)),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    let window = Some((at(5, 0), at(5, 1)));
    for tech in [&none, &expired] {
        refused(
            &ops.create(ops.order(JobType::Inspection, &[tech], window))
                .await,
            Code::FailedPrecondition,
            "CERTIFICATION_REQUIRED",
        );
    }
    // A camera inspection needs the camera kind, which nobody holds.
    refused(
        &ops.create(ops.order(JobType::CameraInspection, &[&valid], window))
            .await,
        Code::FailedPrecondition,
        "CERTIFICATION_REQUIRED",
    );
    let wo = ops
        .create(ops.order(JobType::Inspection, &[&valid], window))
        .await
        .unwrap();
    // Adding an uncertified technician later is refused too.
    let mut more = wo.clone();
    more.technicians.push(none.clone());
    let r = ops
        .orders()
        .update_work_order(ops.env.req(UpdateWorkOrderRequest {
            work_order: Some(more),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["technicians".into()],
            }),
            ..Default::default()
        }))
        .await
        .map(tonic::Response::into_inner);
    refused(&r, Code::FailedPrecondition, "CERTIFICATION_REQUIRED");
}

#[tokio::test]
async fn a_technician_sees_and_moves_only_their_own_work_orders() {
    let ops = Ops::new().await;
    let token = ops.env.token.clone();
    let (mine, my_token) = ops.technician().await;
    let (theirs, _) = ops.technician().await;
    let own = ops
        .create(ops.order(JobType::Pumping, &[&mine], Some((at(7, 0), at(7, 2)))))
        .await
        .unwrap();
    let other = ops
        .create(ops.order(JobType::Pumping, &[&theirs], Some((at(7, 0), at(7, 2)))))
        .await
        .unwrap();
    for wo in [&own, &other] {
        ops.transition(&token, &wo.name, S::Scheduled, "")
            .await
            .unwrap();
    }
    // Get and transition: the other's work order does not exist for them.
    assert!(ops.get(&my_token, &own.name).await.is_ok());
    let r = ops.get(&my_token, &other.name).await.unwrap_err();
    assert_eq!(r.code(), Code::NotFound, "{r:?}");
    let r = ops
        .transition(&my_token, &other.name, S::Enroute, "")
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound, "{r:?}");
    let r = ops
        .orders()
        .list_work_order_events(TestServer::request(
            &my_token,
            ListWorkOrderEventsRequest {
                parent: other.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::NotFound, "{r:?}");
    // List: only their own, whatever the filter asks.
    let listed = ops
        .orders()
        .list_work_orders(TestServer::request(
            &my_token,
            ListWorkOrdersRequest {
                parent: ops.env.parent(),
                filter: format!("technician = \"{theirs}\""),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .work_orders;
    assert!(listed.is_empty(), "{listed:?}");
    let listed = ops
        .orders()
        .list_work_orders(TestServer::request(
            &my_token,
            ListWorkOrdersRequest {
                parent: ops.env.parent(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .work_orders;
    assert_eq!(
        listed.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        [own.name.as_str()]
    );
    // They move their own; the other's is untouched.
    ops.transition(&my_token, &own.name, S::Enroute, "")
        .await
        .unwrap();
    assert_eq!(
        ops.get(&token, &other.name).await.unwrap().status,
        S::Scheduled as i32
    );

    // The second wall: a query that forgets the filter still sees only their work orders.
    let user = ops.member_user_of(&my_token);
    let mut app = AsyncPgConnection::establish(&ops.env.db.app_url("fieldops"))
        .await
        .unwrap();
    app.batch_execute("BEGIN").await.unwrap();
    diesel::sql_query(
        "SELECT set_config('app.org_id', $1, true), set_config('app.user_id', $2, true)",
    )
    .bind::<Text, _>(ops.env.org.to_string())
    .bind::<Text, _>(user)
    .execute(&mut app)
    .await
    .unwrap();
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let seen: N = diesel::sql_query("SELECT count(*) AS n FROM fieldops.work_orders")
        .get_result(&mut app)
        .await
        .unwrap();
    assert_eq!(
        seen.n, 1,
        "the policy let a technician see another's work order"
    );
    let id = other.name.rsplit('/').next().unwrap().to_owned();
    let changed =
        diesel::sql_query("UPDATE fieldops.work_orders SET notes = 'x' WHERE id = $1::uuid")
            .bind::<Text, _>(id)
            .execute(&mut app)
            .await
            .unwrap();
    assert_eq!(
        changed, 0,
        "the policy let a technician change another's work order"
    );
    app.batch_execute("ROLLBACK").await.unwrap();
}

impl Ops {
    /// The user id in a token's subject.
    fn member_user_of(&self, token: &str) -> String {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        claims["sub"]
            .as_str()
            .unwrap()
            .trim_start_matches("users/")
            .to_owned()
    }
}

impl Ops {
    fn scheduling(&self) -> SchedulingServiceClient<Channel> {
        SchedulingServiceClient::new(self.channel())
    }

    /// The starts of the slots offered for a grease-trap job at the property on `day`.
    async fn slot_starts(
        &self,
        day: u32,
        priority: WorkOrderPriority,
    ) -> Vec<(DateTime<Utc>, bool)> {
        let slots = self
            .scheduling()
            .list_available_slots(self.env.req(ListAvailableSlotsRequest {
                parent: self.env.parent(),
                job_type: JobType::GreaseTrap as i32,
                property: self.property.clone(),
                start_time: Some(ts(at(day, -12))),
                end_time: Some(ts(at(day, 12))),
                priority: priority as i32,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .slots;
        slots
            .into_iter()
            .map(|s| {
                let t = s.start_time.unwrap();
                let start = DateTime::from_timestamp(t.seconds, 0).unwrap();
                (start, s.uses_emergency_buffer)
            })
            .collect()
    }

    async fn book(
        &self,
        priority: WorkOrderPriority,
        tech: &str,
        start: DateTime<Utc>,
    ) -> Result<WorkOrder, Status> {
        let mut order = self.order(JobType::GreaseTrap, &[], None);
        order.priority = priority as i32;
        let wo = self.create(order).await.unwrap();
        self.scheduling()
            .book_work_order(self.env.req(BookWorkOrderRequest {
                name: wo.name,
                technician: tech.to_owned(),
                start_time: Some(ts(start)),
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn slots_are_what_shifts_leave_and_only_urgent_work_uses_the_buffer() {
    let ops = Ops::new().await;
    let (tech, _) = ops.technician().await;
    ops.scheduling()
        .update_scheduling_settings(ops.env.req(UpdateSchedulingSettingsRequest {
            scheduling_settings: Some(SchedulingSettings {
                name: format!("{}/schedulingSettings", ops.env.parent()),
                emergency_buffer_percent: 25,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["emergency_buffer_percent".into()],
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    // One 8-hour shift, 08:00 to 16:00, in the property's zone.
    let day = 12;
    let hour = |h: i64| at(day, h - 12);
    ShiftServiceClient::new(ops.channel())
        .create_shift(ops.env.req(CreateShiftRequest {
            parent: ops.env.parent(),
            shift: Some(Shift {
                technician: tech.clone(),
                start_time: Some(ts(hour(8))),
                end_time: Some(ts(hour(16))),
                zone: "north".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    let normal = WorkOrderPriority::Normal;
    let starts =
        |hours: &[i64], buffer: bool| hours.iter().map(|h| (hour(*h), buffer)).collect::<Vec<_>>();
    assert_eq!(
        ops.slot_starts(day, normal).await,
        starts(&[8, 9, 10, 11, 12, 13, 14], false)
    );
    // Two 2-hour jobs booked: what remains is offered, all of it within the normal capacity.
    ops.book(normal, &tech, hour(8)).await.unwrap();
    ops.book(normal, &tech, hour(10)).await.unwrap();
    assert_eq!(
        ops.slot_starts(day, normal).await,
        starts(&[12, 13, 14], false)
    );
    // A third fills the 6 hours a normal job may use; the last 2 hours are the buffer.
    let third = ops.book(normal, &tech, hour(12)).await.unwrap();
    assert_eq!(third.status, S::Scheduled as i32);
    assert_eq!(ops.slot_starts(day, normal).await, Vec::new());
    assert_eq!(
        ops.slot_starts(day, WorkOrderPriority::Emergency).await,
        starts(&[14], true)
    );
    // Booking follows the same rules: a normal job cannot take the buffer, an emergency can,
    // and a slot just taken is refused cleanly.
    let r = ops.book(normal, &tech, hour(14)).await;
    refused(&r, Code::FailedPrecondition, "SLOT_TAKEN");
    ops.book(WorkOrderPriority::Emergency, &tech, hour(14))
        .await
        .unwrap();
    let r = ops
        .book(WorkOrderPriority::Emergency, &tech, hour(14))
        .await;
    refused(&r, Code::FailedPrecondition, "SLOT_TAKEN");
    assert_eq!(
        ops.slot_starts(day, WorkOrderPriority::Emergency).await,
        Vec::new()
    );
}

#[tokio::test]
async fn expiring_credentials_are_listed_soonest_first_with_the_expired_ones() {
    let ops = Ops::new().await;
    let (tech, _) = ops.technician().await;
    let now = Utc::now();
    let mut certs = CertificationServiceClient::new(ops.channel());
    let mut made = Vec::new();
    for days in [-3, 400, 20] {
        let c = certs
            .create_certification(ops.env.req(CreateCertificationRequest {
                parent: ops.env.parent(),
                certification: Some(Certification {
                    technician: tech.clone(),
                    kind: CertificationKind::Hazmat as i32,
                    number: format!("C{days}"),
                    expire_time: Some(ts(now + chrono::Duration::days(days))),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        made.push(c.name);
    }
    let license = LicenseServiceClient::new(ops.channel())
        .create_license(ops.env.req(CreateLicenseRequest {
            parent: ops.env.parent(),
            license: Some(License {
                truck: ops.truck.clone(),
                authority: "County".into(),
                number: "HAUL-1".into(),
                expire_time: Some(ts(now + chrono::Duration::days(10))),
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let list = |page_token: String| {
        let mut certs = certs.clone();
        let req = ops.env.req(ListExpiringCredentialsRequest {
            parent: ops.env.parent(),
            within: Some(prost_types::Duration {
                seconds: 30 * 86_400,
                nanos: 0,
            }),
            page_size: 2,
            page_token,
        });
        async move {
            certs
                .list_expiring_credentials(req)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = list(String::new()).await;
    let second = list(first.next_page_token.clone()).await;
    let got: Vec<(String, bool)> = first
        .credentials
        .iter()
        .chain(&second.credentials)
        .map(|c| (c.credential.clone(), c.expired))
        .collect();
    assert_eq!(
        got,
        [
            (made[0].clone(), true),
            (license.name.clone(), false),
            (made[2].clone(), false)
        ]
    );
    assert!(second.next_page_token.is_empty());
    assert_eq!(second.credentials.last().unwrap().holder, tech);
    assert_eq!(first.credentials[1].holder, ops.truck);
}

#[tokio::test]
async fn each_technician_keeps_their_own_times_and_technicians_make_only_their_moves() {
    let ops = Ops::new().await;
    let token = ops.env.token.clone();
    let (a, a_token) = ops.technician().await;
    let (b, b_token) = ops.technician().await;
    let wo = ops
        .create(ops.order(JobType::Repair, &[&a, &b], Some((at(20, 0), at(20, 3)))))
        .await
        .unwrap();
    // Scheduling is the dispatcher's move, not a technician's.
    let r = ops.transition(&a_token, &wo.name, S::Scheduled, "").await;
    refused(&r, Code::PermissionDenied, "TRANSITION_ROLE");
    ops.transition(&token, &wo.name, S::Scheduled, "")
        .await
        .unwrap();
    // A leaves first, B checks in to the same step later; A cannot check in twice.
    ops.transition(&a_token, &wo.name, S::Enroute, "")
        .await
        .unwrap();
    let joined = ops
        .transition(&b_token, &wo.name, S::Enroute, "")
        .await
        .unwrap();
    assert_eq!(joined.status, S::Enroute as i32);
    let r = ops.transition(&a_token, &wo.name, S::Enroute, "").await;
    refused(&r, Code::FailedPrecondition, "TRANSITION_NOT_ALLOWED");
    // Canceling is the dispatcher's too.
    let r = ops
        .transition(&b_token, &wo.name, S::Canceled, "rain")
        .await;
    refused(&r, Code::PermissionDenied, "TRANSITION_ROLE");
    let events = ops
        .orders()
        .list_work_order_events(ops.env.req(ListWorkOrderEventsRequest {
            parent: wo.name.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .work_order_events;
    let enroute: Vec<_> = events
        .iter()
        .filter(|e| e.to_status == S::Enroute as i32)
        .collect();
    assert_eq!(enroute.len(), 2, "{events:?}");
    let whose: Vec<&str> = enroute
        .iter()
        .map(|e| {
            assert_eq!(e.technician_times.len(), 1, "{e:?}");
            e.technician_times[0].technician.as_str()
        })
        .collect();
    assert_eq!(whose, [a.as_str(), b.as_str()]);
    assert_ne!(
        enroute[0].actor, enroute[1].actor,
        "each recorded with its own actor"
    );
    assert_eq!(
        enroute[1].from_status,
        S::Enroute as i32,
        "a check-in keeps the status"
    );
}

#[tokio::test]
async fn a_completed_work_order_is_invoiced_once_through_fieldops_api() {
    use serde_json::json;
    let ops = Ops::new().await;
    let token = ops.env.token.clone();
    let (tech, _) = ops.technician().await;
    let mut order = ops.order(JobType::Repair, &[&tech], Some((at(25, 0), at(25, 2))));
    order.line_items = vec![crm_proto::fieldops_v1::LineItem {
        description: "Replace outlet baffle".into(),
        quantity: 1,
        unit_price: Some(crm_proto::common_v1::Money {
            currency_code: "USD".into(),
            units: 180,
            nanos: 0,
        }),
    }];
    let wo = ops.create(order).await.unwrap();
    let invoice = |wo: &str| json!({"parent": ops.env.parent(), "work_order": wo, "tax_percent": "8.25", "terms_days": 30});
    let s = "crm.core.v1.InvoiceService";
    let m = "CreateInvoiceFromWorkOrder";
    let r = crate::conformance::rpc(&ops.env, &token, s, m, invoice(&wo.name))
        .await
        .unwrap_err();
    assert_eq!(reason(&r), "WORK_ORDER_NOT_COMPLETED", "{r:?}");
    for step in path_to(S::Completed) {
        ops.transition(&token, &wo.name, step, "").await.unwrap();
    }
    let inv = crate::conformance::rpc(&ops.env, &token, s, m, invoice(&wo.name))
        .await
        .unwrap();
    assert_eq!(inv["status"], "INVOICE_STATUS_DRAFT");
    assert_eq!(inv["customer"], ops.customer);
    assert_eq!(inv["work_order"], wo.name);
    assert_eq!(inv["lines"][0]["description"], "Replace outlet baffle");
    // 180.00 + 8.25 % = 194.85.
    assert_eq!(inv["total"]["units"], "194", "{inv:#}");
    let again = crate::conformance::rpc(&ops.env, &token, s, m, invoice(&wo.name))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // Another organization's work order name is refused before fieldops is asked.
    let other = format!(
        "organizations/{}/workOrders/{}",
        Uuid::now_v7(),
        Uuid::now_v7()
    );
    let r = crate::conformance::rpc(&ops.env, &token, s, m, invoice(&other))
        .await
        .unwrap_err();
    assert_eq!(r.code(), Code::InvalidArgument, "{r:?}");
}

#[tokio::test]
async fn the_work_order_of_a_quote_is_invoiced_with_the_quotes_tax_treatment() {
    use serde_json::json;
    let ops = Ops::new().await;
    let token = ops.env.token.clone();
    let p = ops.env.parent();
    let (tech, _) = ops.technician().await;
    let core = |service: &str, method: &str, body: serde_json::Value| {
        let service = format!("crm.core.v1.{service}");
        let method = method.to_owned();
        let (env, token) = (&ops.env, token.clone());
        async move {
            crate::conformance::rpc(env, &token, &service, &method, body)
                .await
                .unwrap()
        }
    };
    let item = core(
        "CatalogItemService",
        "CreateCatalogItem",
        json!({"parent": p,
        "catalog_item": {"code": "baffle", "display_name": "Replace outlet baffle",
        "job_type": "JOB_TYPE_REPAIR", "active": true,
        "base_price": {"currency_code": "USD", "units": 180}}}),
    )
    .await;
    let quote = core(
        "QuoteService",
        "CreateQuote",
        json!({"parent": p, "quote": {
        "customer": ops.customer, "property": ops.property, "title": "Baffle repair",
        "tax_percent": "8.25", "valid_until": "2030-01-01T00:00:00Z",
        "options": [{"level": "QUOTE_LEVEL_GOOD", "title": "Repair", "lines": [
            {"catalog_item": item["name"], "quantity": 1, "taxable": true},
            {"description": "Disposal fee", "quantity": 1, "taxable": false,
             "unit_price": {"currency_code": "USD", "units": 40}}]}]}}),
    )
    .await;
    let q = quote["name"].as_str().unwrap();
    core(
        "QuoteService",
        "TransitionQuote",
        json!({"name": q, "to_status": "QUOTE_STATUS_SENT"}),
    )
    .await;
    let accepted = core(
        "QuoteService",
        "AcceptQuote",
        json!({"name": q, "level": "QUOTE_LEVEL_GOOD", "create_work_order": true}),
    )
    .await;
    let wo = accepted["work_order"].as_str().unwrap().to_owned();
    let window = ops.order(JobType::Repair, &[&tech], Some((at(25, 0), at(25, 2))));
    ops.orders()
        .update_work_order(ops.env.req(crm_proto::fieldops_v1::UpdateWorkOrderRequest {
            work_order: Some(WorkOrder {
                name: wo.clone(),
                ..window
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![
                    "technicians".into(),
                    "scheduled_start_time".into(),
                    "scheduled_end_time".into(),
                ],
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
    for step in path_to(S::Completed) {
        ops.transition(&token, &wo, step, "").await.unwrap();
    }
    // Without a tax_percent: the quote's 8.25 %, on the taxable line only.
    let inv = core(
        "InvoiceService",
        "CreateInvoiceFromWorkOrder",
        json!({"parent": p, "work_order": wo}),
    )
    .await;
    assert_eq!(inv["tax_percent"], "8.25", "{inv:#}");
    let taxable: Vec<bool> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["taxable"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(taxable, [true, false]);
    let option = &accepted["options"][0];
    assert_eq!(inv["subtotal"], option["subtotal"]);
    assert_eq!(inv["tax"], option["tax"]);
    assert_eq!(inv["total"], option["total"]);
}
