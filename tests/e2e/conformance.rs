//! The conformance suite every standard resource passes. A resource is declared once, as a
//! [`Fixture`] (its service, a valid body, a field to update, the text field it orders by, what
//! it redacts); the suite drives its RPCs through the descriptor set with proto3 JSON, so it
//! needs no code per resource. `every_standard_resource_is_declared` fails when a service with
//! the standard methods has no fixture.

use prost_reflect::{DynamicMessage, MethodDescriptor, SerializeOptions};
use serde_json::{Value, json};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::every_rpc::call;
use crate::support::{Env, Suite, count};

/// One standard resource, as the suite needs to know it.
pub struct Fixture {
    /// `crm.core.v1.ContactService`.
    pub service: &'static str,
    /// The resource message, as in `CreateContact`.
    pub singular: &'static str,
    /// As in `ListContacts`.
    pub plural: &'static str,
    /// The resource field of Create and Update requests and the List response's items.
    pub field: &'static str,
    pub list_field: &'static str,
    /// The text field List orders by.
    pub text_order: &'static str,
    /// A valid resource; `i` tells instances apart (and must change the text order field).
    pub body: fn(&World, usize) -> Value,
    /// A field the update mask may name, and a new valid value for it.
    pub update: (&'static str, fn() -> Value),
    /// Fields never shown outside the FULL view, audit entries or events, with the secret
    /// value `body` puts in them.
    pub redacted: &'static [(&'static str, &'static str)],
    /// The resource's custom methods, as calls on the resource named by the argument.
    pub custom: fn(&str) -> Vec<Custom>,
}

/// A custom method call on one resource.
pub struct Custom {
    pub service: &'static str,
    pub method: &'static str,
    pub body: Value,
    /// Whether it changes anything (reads are compared before and after the refused calls).
    pub write: bool,
}

fn no_custom(_: &str) -> Vec<Custom> {
    Vec::new()
}

fn custom(service: &'static str, method: &'static str, body: Value, write: bool) -> Custom {
    Custom {
        service,
        method,
        body,
        write,
    }
}

/// What fixtures reference: a customer and a property of the organization under test, active
/// members (`users/{id}`, one per technician a fixture creates), a technician and a truck.
pub struct World {
    pub customer: String,
    pub property: String,
    pub phone_base: u64,
    pub users: Vec<String>,
    pub technician: String,
    pub truck: String,
    pub facility: String,
    pub work_order: String,
    /// A sent quote (a document that can be sent for signature).
    pub quote: String,
    pub catalog_item: String,
    pub contract_template: String,
    pub message_template: String,
}

fn text(i: usize, what: &str) -> String {
    format!("{what} {i:03}")
}

pub fn fixtures() -> Vec<Fixture> {
    vec![
        Fixture {
            service: "crm.core.v1.CustomerService",
            singular: "Customer",
            plural: "Customers",
            field: "customer",
            list_field: "customers",
            text_order: "display_name",
            body: |_, i| json!({"display_name": text(i, "Customer"), "kind": "CUSTOMER_KIND_RESIDENTIAL"}),
            update: ("notes", || json!("updated notes")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.ContactService",
            singular: "Contact",
            plural: "Contacts",
            field: "contact",
            list_field: "contacts",
            text_order: "display_name",
            body: |w, i| json!({"customer": w.customer, "display_name": text(i, "Contact")}),
            update: ("title", || json!("Kitchen manager")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.PropertyService",
            singular: "Property",
            plural: "Properties",
            field: "property",
            list_field: "properties",
            text_order: "display_name",
            body: |w, i| {
                json!({
                    "customer": w.customer,
                    "display_name": text(i, "Site"),
                    "address": {"region_code": "US", "address_lines": ["1 Harbor Rd"]},
                    "gate_code": "GATE-7391",
                })
            },
            update: ("access_notes", || json!("Lid behind the dumpster")),
            redacted: &[("gate_code", "GATE-7391")],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.EquipmentService",
            singular: "Equipment",
            plural: "Equipment",
            field: "equipment",
            list_field: "equipment",
            text_order: "display_name",
            body: |w, i| {
                json!({
                    "property": w.property,
                    "kind": "EQUIPMENT_KIND_GREASE_TRAP",
                    "display_name": text(i, "Trap"),
                    "capacity_gallons": 1000,
                })
            },
            update: ("notes", || json!("baffle replaced")),
            redacted: &[],
            custom: |name| {
                let e = "crm.core.v1.EquipmentService";
                vec![
                    custom(
                        e,
                        "RecordEquipmentReading",
                        json!({"name": name, "reading": {"solids_depth_inches": 4.0,
                               "grease_depth_inches": 2.0, "read_time": "2026-01-02T03:04:05Z"}}),
                        true,
                    ),
                    custom(e, "ListEquipmentReadings", json!({"parent": name}), false),
                ]
            },
        },
        Fixture {
            service: "crm.core.v1.TicketService",
            singular: "Ticket",
            plural: "Tickets",
            field: "ticket",
            list_field: "tickets",
            text_order: "subject",
            body: |w, i| json!({"customer": w.customer, "subject": text(i, "Ticket"), "priority": "TICKET_PRIORITY_NORMAL"}),
            update: ("description", || json!("smells after the pump-out")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.InventoryItemService",
            singular: "InventoryItem",
            plural: "InventoryItems",
            field: "inventory_item",
            list_field: "inventory_items",
            text_order: "display_name",
            body: |_, i| json!({"sku": format!("SKU-{i}"), "display_name": text(i, "Item"), "unit": "gallon"}),
            update: ("notes", || json!("keep cool")),
            redacted: &[],
            custom: |name| {
                let i = "crm.core.v1.InventoryItemService";
                vec![
                    custom(
                        i,
                        "AdjustStock",
                        json!({"name": name, "location": "yard", "delta": 5, "reason": "count"}),
                        true,
                    ),
                    custom(i, "ListStockLevels", json!({"parent": name}), false),
                    custom(i, "ListStockAdjustments", json!({"parent": name}), false),
                ]
            },
        },
        Fixture {
            service: "crm.core.v1.ActivityService",
            singular: "Activity",
            plural: "Activities",
            field: "activity",
            list_field: "activities",
            text_order: "subject",
            body: |w, i| json!({"customer": w.customer, "kind": "ACTIVITY_KIND_NOTE", "subject": text(i, "Note")}),
            update: ("body", || json!("called back")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.ConversationService",
            singular: "Conversation",
            plural: "Conversations",
            field: "conversation",
            list_field: "conversations",
            text_order: "subject",
            body: |w, i| {
                json!({
                    "customer": w.customer,
                    "channel": "CHANNEL_SMS",
                    "participant": format!("+1{}", w.phone_base + i as u64),
                    "subject": text(i, "Thread"),
                })
            },
            update: ("subject", || json!("Renamed thread")),
            redacted: &[],
            custom: |name| {
                let m = "crm.core.v1.MessageService";
                vec![
                    custom(
                        m,
                        "SendMessage",
                        json!({"parent": name, "body": "Service booked for Tuesday",
                               "purpose": "MESSAGE_PURPOSE_TRANSACTIONAL"}),
                        true,
                    ),
                    custom(m, "ListMessages", json!({"parent": name}), false),
                ]
            },
        },
        Fixture {
            service: "crm.core.v1.CallDispositionService",
            singular: "CallDisposition",
            plural: "CallDispositions",
            field: "call_disposition",
            list_field: "call_dispositions",
            text_order: "display_name",
            body: |_, i| json!({"code": format!("code-{i}"), "display_name": text(i, "Outcome"), "active": true}),
            update: ("description", || json!("visit booked on the call")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.CallLogService",
            singular: "CallLog",
            plural: "CallLogs",
            field: "call_log",
            list_field: "call_logs",
            text_order: "phone",
            body: |w, i| {
                json!({
                    "customer": w.customer,
                    "direction": "DIRECTION_INBOUND",
                    "phone": format!("+1{}", w.phone_base + i as u64),
                    "start_time": "2026-01-02T03:04:05Z",
                })
            },
            update: ("notes", || json!("asked for a quote")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.SyncLogService",
            singular: "SyncLog",
            plural: "SyncLogs",
            field: "sync_log",
            list_field: "sync_logs",
            text_order: "system",
            body: |_, i| {
                json!({
                    "system": format!("system-{i}"),
                    "direction": "SYNC_DIRECTION_EXPORT",
                    "status": "SYNC_STATUS_RUNNING",
                    "start_time": "2026-01-02T03:04:05Z",
                })
            },
            update: ("cursor", || json!("page-7")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.InvoiceService",
            singular: "Invoice",
            plural: "Invoices",
            field: "invoice",
            list_field: "invoices",
            // Drafts have no number yet: the order falls to the id.
            text_order: "number",
            body: |w, i| {
                json!({
                    "customer": w.customer,
                    "lines": [{"description": text(i, "Pump-out"), "quantity": 1,
                               "unit_price": {"currency_code": "USD", "units": 325}, "taxable": true}],
                    "tax_percent": "8.25",
                    "terms_days": 30,
                })
            },
            update: ("notes", || json!("thank you")),
            redacted: &[],
            custom: |name| {
                let s = "crm.core.v1.InvoiceService";
                vec![
                    custom(s, "ListPayments", json!({"parent": name}), false),
                    custom(s, "ListCreditNotes", json!({"parent": name}), false),
                ]
            },
        },
        Fixture {
            service: "crm.core.v1.QuoteService",
            singular: "Quote",
            plural: "Quotes",
            field: "quote",
            list_field: "quotes",
            text_order: "title",
            body: |w, i| {
                json!({
                    "customer": w.customer,
                    "property": w.property,
                    "title": text(i, "Pump-out options"),
                    "options": [{"level": "QUOTE_LEVEL_GOOD", "title": "Pump only",
                                 "lines": [{"description": "Pump-out", "quantity": 1,
                                            "unit_price": {"currency_code": "USD", "units": 300}}]}],
                    "tax_percent": "8.25",
                    "valid_until": "2030-01-01T00:00:00Z",
                })
            },
            update: ("tax_percent", || json!("6.25")),
            redacted: &[],
            custom: |name| {
                vec![custom(
                    "crm.core.v1.QuoteService",
                    "TransitionQuote",
                    json!({"name": name, "to_status": "QUOTE_STATUS_SENT"}),
                    true,
                )]
            },
        },
        Fixture {
            service: "crm.core.v1.SignatureRequestService",
            singular: "SignatureRequest",
            plural: "SignatureRequests",
            field: "signature_request",
            list_field: "signature_requests",
            text_order: "signer_name",
            body: |w, i| {
                json!({
                    "document": w.quote,
                    "signer_name": text(i, "Signer"),
                    "signer_email": "signer@example.com",
                    "consent_text": "I agree to sign electronically.",
                    "consent_version": "esign-1",
                })
            },
            update: ("expire_time", || {
                let t = chrono::Utc::now() + chrono::Duration::days(5);
                json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }),
            redacted: &[],
            custom: |name| {
                let s = "crm.core.v1.SignatureRequestService";
                vec![
                    custom(
                        s,
                        "SignDocument",
                        json!({"name": name, "code": "000000"}),
                        true,
                    ),
                    custom(s, "VerifySignature", json!({"name": name}), false),
                ]
            },
        },
        Fixture {
            service: "crm.core.v1.ContractTemplateService",
            singular: "ContractTemplate",
            plural: "ContractTemplates",
            field: "contract_template",
            list_field: "contract_templates",
            text_order: "display_name",
            body: |w, i| {
                json!({
                    "display_name": text(i, "Quarterly grease trap"),
                    "catalog_item": w.catalog_item,
                    "recurrence": {"interval": 90, "unit": "RECURRENCE_UNIT_DAY"},
                    "price": {"currency_code": "USD", "units": 250},
                    "term_months": 12,
                })
            },
            update: ("term_months", || json!(24)),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.ContractService",
            singular: "Contract",
            plural: "Contracts",
            field: "contract",
            list_field: "contracts",
            text_order: "title",
            body: |w, i| {
                json!({
                    "customer": w.customer,
                    "property": w.property,
                    "template": w.contract_template,
                    "title": text(i, "Maintenance agreement"),
                    "start_time": "2027-01-04T09:00:00Z",
                })
            },
            update: ("auto_renew", || json!(true)),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.MessageTemplateService",
            singular: "MessageTemplate",
            plural: "MessageTemplates",
            field: "message_template",
            list_field: "message_templates",
            text_order: "display_name",
            body: |_, i| {
                json!({"display_name": text(i, "Spring reminder"), "channel": "CHANNEL_SMS",
                       "body": "Hi {{customer.first_name}}, time for your pump-out. Reply STOP to opt out."})
            },
            update: ("body", || {
                json!("Hi {{customer.display_name}}, book your service.")
            }),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.CampaignService",
            singular: "Campaign",
            plural: "Campaigns",
            field: "campaign",
            list_field: "campaigns",
            text_order: "display_name",
            body: |w, i| {
                json!({"display_name": text(i, "Spring campaign"), "template": w.message_template,
                       "audience_filter": "kind = CUSTOMER_KIND_COMMERCIAL"})
            },
            update: ("audience_filter", || {
                json!("kind = CUSTOMER_KIND_RESIDENTIAL")
            }),
            redacted: &[],
            custom: |name| {
                let s = "crm.core.v1.CampaignService";
                vec![custom(s, "LaunchCampaign", json!({"name": name}), true)]
            },
        },
        Fixture {
            service: "crm.core.v1.WorkflowService",
            singular: "Workflow",
            plural: "Workflows",
            field: "workflow",
            list_field: "workflows",
            text_order: "display_name",
            body: |w, i| {
                json!({"display_name": text(i, "Welcome"), "trigger_event_type": "crm.core.v1.Customer.created",
                       "steps": [{"delay": "3600s", "send_template": w.message_template},
                                 {"add_tag": "welcomed"}]})
            },
            update: ("active", || json!(true)),
            redacted: &[],
            custom: |name| {
                let s = "crm.core.v1.WorkflowService";
                vec![custom(s, "ListEnrollments", json!({"parent": name}), false)]
            },
        },
        Fixture {
            service: "crm.core.v1.CatalogItemService",
            singular: "CatalogItem",
            plural: "CatalogItems",
            field: "catalog_item",
            list_field: "catalog_items",
            text_order: "display_name",
            body: |_, i| {
                json!({
                    "code": format!("pump-{i}"),
                    "display_name": text(i, "Grease trap pump-out"),
                    "job_type": "JOB_TYPE_GREASE_TRAP",
                    "unit": "visit",
                    "base_price": {"currency_code": "USD", "units": 325},
                    "included_gallons": 1000,
                    "taxable": true,
                    "active": true,
                })
            },
            update: ("included_gallons", || json!(1500)),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.PricingZoneService",
            singular: "PricingZone",
            plural: "PricingZones",
            field: "pricing_zone",
            list_field: "pricing_zones",
            text_order: "display_name",
            body: |_, i| {
                json!({"code": format!("zone-{i}"), "display_name": text(i, "Zone"),
                       "multiplier": "1.15", "travel_band": 2})
            },
            update: ("multiplier", || json!("1.2")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.PricingTierService",
            singular: "PricingTier",
            plural: "PricingTiers",
            field: "pricing_tier",
            list_field: "pricing_tiers",
            text_order: "display_name",
            body: |_, i| {
                json!({"code": format!("tier-{i}"), "display_name": text(i, "Tier"),
                       "discount_percent": "7.5"})
            },
            update: ("discount_percent", || json!("10")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.core.v1.PricingRuleService",
            singular: "PricingRule",
            plural: "PricingRules",
            field: "pricing_rule",
            list_field: "pricing_rules",
            text_order: "display_name",
            body: |_, i| {
                json!({"display_name": text(i, "After hours"), "kind": "PRICING_RULE_KIND_AFTER_HOURS",
                       "percent": "50", "business_start_time": "08:00", "business_end_time": "17:00",
                       "order": 10, "active": true})
            },
            update: ("percent", || json!("25")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.TechnicianService",
            singular: "Technician",
            plural: "Technicians",
            field: "technician",
            list_field: "technicians",
            text_order: "display_name",
            body: |w, i| {
                json!({
                    "user": w.users[i],
                    "display_name": text(i, "Technician"),
                    "skills": ["JOB_TYPE_PUMPING", "JOB_TYPE_GREASE_TRAP"],
                    "home_zone": "north",
                    "hourly_cost": {"currency_code": "USD", "units": 38, "nanos": 500_000_000},
                })
            },
            update: ("home_zone", || json!("south")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.TruckService",
            singular: "Truck",
            plural: "Trucks",
            field: "truck",
            list_field: "trucks",
            text_order: "display_name",
            body: |w, i| {
                json!({
                    "display_name": text(i, "Truck"),
                    "plate": format!("TX-{i:04}"),
                    "tank_capacity_gallons": 3500,
                    "technician": w.technician,
                    "active": true,
                })
            },
            update: ("tank_capacity_gallons", || json!(4000)),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.DisposalFacilityService",
            singular: "DisposalFacility",
            plural: "DisposalFacilities",
            field: "disposal_facility",
            list_field: "disposal_facilities",
            text_order: "display_name",
            body: |_, i| {
                json!({
                    "display_name": text(i, "Plant"),
                    "address": {"region_code": "US", "address_lines": ["900 Treatment Way"]},
                    "location": {"latitude": 30.2, "longitude": -97.7},
                    "permit_number": format!("TX-WQ-{i:05}"),
                    "accepted_waste_kinds": ["WASTE_KIND_SEPTAGE", "WASTE_KIND_GREASE"],
                    "opening_hours": [{"day_of_week": 1, "open_time": "07:00", "close_time": "16:30"}],
                    "tipping_fee_per_gallon": {"currency_code": "USD", "units": 0, "nanos": 85_000_000},
                    "active": true,
                })
            },
            update: ("permit_number", || json!("TX-WQ-99999")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.ShiftService",
            singular: "Shift",
            plural: "Shifts",
            field: "shift",
            list_field: "shifts",
            text_order: "zone",
            body: |w, i| {
                // One day apart: a technician's shifts never overlap.
                json!({
                    "technician": w.technician,
                    "start_time": format!("2027-03-{:02}T13:00:00Z", i + 1),
                    "end_time": format!("2027-03-{:02}T21:00:00Z", i + 1),
                    "zone": format!("zone-{i}"),
                })
            },
            update: ("notes", || json!("covering for Sam")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.TimeOffPeriodService",
            singular: "TimeOffPeriod",
            plural: "TimeOffPeriods",
            field: "time_off_period",
            list_field: "time_off_periods",
            text_order: "reason",
            body: |w, i| {
                json!({
                    "technician": w.technician,
                    "start_time": "2027-04-01T00:00:00Z",
                    "end_time": "2027-04-08T00:00:00Z",
                    "reason": text(i, "Vacation"),
                })
            },
            update: ("end_time", || json!("2027-04-09T00:00:00Z")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.CertificationService",
            singular: "Certification",
            plural: "Certifications",
            field: "certification",
            list_field: "certifications",
            text_order: "number",
            body: |w, i| {
                json!({
                    "technician": w.technician,
                    "kind": "CERTIFICATION_KIND_INSPECTION",
                    "number": format!("NAWT-{i:05}"),
                    "issuer": "NAWT",
                    "expire_time": "2028-01-01T00:00:00Z",
                })
            },
            update: ("expire_time", || json!("2029-01-01T00:00:00Z")),
            redacted: &[],
            custom: |name| {
                let org = name
                    .split("/certifications/")
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                vec![custom(
                    "crm.fieldops.v1.CertificationService",
                    "ListExpiringCredentials",
                    json!({"parent": org, "within": "864000s"}),
                    false,
                )]
            },
        },
        Fixture {
            service: "crm.fieldops.v1.InspectionService",
            singular: "Inspection",
            plural: "Inspections",
            field: "inspection",
            list_field: "inspections",
            text_order: "report_reference",
            body: |w, i| {
                json!({
                    "property": w.property,
                    "kind": "INSPECTION_KIND_GREASE_TRAP",
                    "result": "INSPECTION_RESULT_CONDITIONAL",
                    "findings": "outlet baffle cracked",
                    "report_reference": text(i, "FOG report"),
                    "inspector": w.technician,
                    "inspect_time": "2026-11-30T15:00:00Z",
                })
            },
            update: ("result", || json!("INSPECTION_RESULT_PASS")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.LicenseService",
            singular: "License",
            plural: "Licenses",
            field: "license",
            list_field: "licenses",
            text_order: "number",
            body: |w, i| {
                json!({
                    "truck": w.truck,
                    "authority": "Travis County Health",
                    "number": format!("HAUL-{i:05}"),
                    "expire_time": "2028-01-01T00:00:00Z",
                })
            },
            update: ("authority", || json!("Texas TCEQ")),
            redacted: &[],
            custom: no_custom,
        },
        Fixture {
            service: "crm.fieldops.v1.WorkOrderService",
            singular: "WorkOrder",
            plural: "WorkOrders",
            field: "work_order",
            list_field: "work_orders",
            text_order: "summary",
            body: |w, i| {
                json!({
                    "job_type": "JOB_TYPE_PUMPING",
                    "priority": "WORK_ORDER_PRIORITY_HIGH",
                    "summary": text(i, "Pump the tank"),
                    "customer": w.customer,
                    "property": w.property,
                    "line_items": [{"description": "Pump-out", "quantity": 1,
                                    "unit_price": {"currency_code": "USD", "units": 325}}],
                })
            },
            update: ("notes", || json!("gate on the left")),
            redacted: &[],
            custom: |name| {
                let s = "crm.fieldops.v1.WorkOrderService";
                vec![
                    custom(
                        s,
                        "TransitionWorkOrder",
                        json!({"name": name, "to_status": "WORK_ORDER_STATUS_CANCELED",
                               "reason": "customer called off"}),
                        true,
                    ),
                    custom(s, "ListWorkOrderEvents", json!({"parent": name}), false),
                ]
            },
        },
        Fixture {
            service: "crm.fieldops.v1.WasteManifestService",
            singular: "WasteManifest",
            plural: "WasteManifests",
            field: "waste_manifest",
            list_field: "waste_manifests",
            text_order: "ticket_number",
            body: |w, i| {
                json!({
                    "work_order": w.work_order,
                    "truck": w.truck,
                    "technician": w.technician,
                    "disposal_facility": w.facility,
                    "waste_kind": "WASTE_KIND_SEPTAGE",
                    "gallons": 1000,
                    "ticket_number": format!("T-{i:05}"),
                    "pickup_time": "2026-11-30T15:00:00Z",
                })
            },
            update: ("gallons", || json!(1200)),
            redacted: &[],
            custom: no_custom,
        },
    ]
}

const STANDARD: [&str; 6] = ["Create", "Get", "List", "Update", "Delete", "Undelete"];

fn method(service: &str, name: &str) -> MethodDescriptor {
    crm_proto::json::pool()
        .unwrap()
        .get_service_by_name(service)
        .unwrap_or_else(|| panic!("no service {service}"))
        .methods()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no method {service}/{name}"))
}

/// Calls `service/name` with the proto3 JSON `body`; answers the response as JSON.
pub async fn rpc(
    env: &Env,
    token: &str,
    service: &str,
    name: &str,
    body: Value,
) -> Result<Value, Status> {
    let m = method(service, name);
    let request = DynamicMessage::deserialize(m.input(), body.clone())
        .unwrap_or_else(|e| panic!("{name} request {body}: {e}"));
    let bytes = call(&env.server.channel, &m, token, &request)
        .await?
        .unwrap_or_default();
    let response = DynamicMessage::decode(m.output(), bytes.as_slice()).unwrap();
    let options = SerializeOptions::new().use_proto_field_name(true);
    Ok(response
        .serialize_with_options(serde_json::value::Serializer, &options)
        .unwrap())
}

/// A field path as a FieldMask path in proto3 JSON (lowerCamelCase).
fn mask(path: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in path.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn str_of<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_default()
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list[field]
        .as_array()
        .map(|items| items.iter().map(|i| str_of(i, "name").to_owned()).collect())
        .unwrap_or_default()
}

fn refused(result: &Result<Value, Status>) -> bool {
    matches!(result, Err(s) if matches!(s.code(), Code::PermissionDenied | Code::NotFound))
}

async fn world(env: &Env) -> World {
    let customer = env.create("Conformance Co").await.name;
    let property = rpc(
        env,
        &env.token,
        "crm.core.v1.PropertyService",
        "CreateProperty",
        json!({"parent": env.parent(), "property": {"customer": customer, "display_name": "Yard",
               "address": {"region_code": "US", "address_lines": ["1 Harbor Rd"]}}}),
    )
    .await
    .unwrap();
    // Active members, one per technician a fixture may create, and one for the world's own.
    let identity = env.server.identity();
    let mut users = Vec::new();
    for n in 0..11 {
        let id = crm_identity::bootstrap::ensure_member(
            &identity.pool,
            &identity.hasher,
            &crm_identity::bootstrap::Member {
                org: env.org,
                org_display_name: "Conformance Co",
                email: &format!("tech-{n}-{}@example.com", Uuid::now_v7().simple()),
                password: "a long enough password",
                roles: &["fieldops.technician"],
                reset_password: false,
            },
        )
        .await
        .unwrap();
        users.push(format!("users/{id}"));
    }
    let parent = env.parent();
    let technician = rpc(
        env,
        &env.token,
        "crm.fieldops.v1.TechnicianService",
        "CreateTechnician",
        json!({"parent": parent, "technician": {"user": users[10], "display_name": "World Tech"}}),
    )
    .await
    .unwrap();
    let technician = str_of(&technician, "name").to_owned();
    let truck = rpc(
        env,
        &env.token,
        "crm.fieldops.v1.TruckService",
        "CreateTruck",
        json!({"parent": parent, "truck": {"display_name": "World Truck", "plate": "WORLD-1",
               "tank_capacity_gallons": 3000, "active": true}}),
    )
    .await
    .unwrap();
    let facility = rpc(
        env,
        &env.token,
        "crm.fieldops.v1.DisposalFacilityService",
        "CreateDisposalFacility",
        json!({"parent": parent, "disposal_facility": {"display_name": "World Plant",
               "address": {"region_code": "US", "address_lines": ["1 Plant Rd"]},
               "permit_number": "WQ-1", "accepted_waste_kinds": ["WASTE_KIND_SEPTAGE"],
               "active": true}}),
    )
    .await
    .unwrap();
    let work_order = rpc(
        env,
        &env.token,
        "crm.fieldops.v1.WorkOrderService",
        "CreateWorkOrder",
        json!({"parent": parent, "work_order": {"job_type": "JOB_TYPE_PUMPING",
               "summary": "World pumping", "customer": customer,
               "property": str_of(&property, "name")}}),
    )
    .await
    .unwrap();
    let quote = rpc(
        env,
        &env.token,
        "crm.core.v1.QuoteService",
        "CreateQuote",
        json!({"parent": parent, "quote": {"customer": customer, "title": "World quote",
               "valid_until": "2030-01-01T00:00:00Z",
               "options": [{"level": "QUOTE_LEVEL_GOOD", "title": "Pump",
                            "lines": [{"description": "Pump-out", "quantity": 1,
                                       "unit_price": {"currency_code": "USD", "units": 300}}]}]}}),
    )
    .await
    .unwrap();
    let quote = str_of(&quote, "name").to_owned();
    rpc(
        env,
        &env.token,
        "crm.core.v1.QuoteService",
        "TransitionQuote",
        json!({"name": quote, "to_status": "QUOTE_STATUS_SENT"}),
    )
    .await
    .unwrap();
    let item = rpc(
        env,
        &env.token,
        "crm.core.v1.CatalogItemService",
        "CreateCatalogItem",
        json!({"parent": parent, "catalog_item": {"code": "world-pump", "display_name": "World pump",
               "base_price": {"currency_code": "USD", "units": 300}, "active": true}}),
    )
    .await
    .unwrap();
    let catalog_item = str_of(&item, "name").to_owned();
    let template = rpc(
        env,
        &env.token,
        "crm.core.v1.ContractTemplateService",
        "CreateContractTemplate",
        json!({"parent": parent, "contract_template": {"display_name": "World plan",
               "catalog_item": catalog_item,
               "recurrence": {"interval": 3, "unit": "RECURRENCE_UNIT_MONTH"},
               "price": {"currency_code": "USD", "units": 280}, "term_months": 12}}),
    )
    .await
    .unwrap();
    let message_template = rpc(
        env,
        &env.token,
        "crm.core.v1.MessageTemplateService",
        "CreateMessageTemplate",
        json!({"parent": parent, "message_template": {"display_name": "World template",
               "channel": "CHANNEL_SMS", "body": "Hello {{customer.first_name}}"}}),
    )
    .await
    .unwrap();
    World {
        message_template: str_of(&message_template, "name").to_owned(),
        quote,
        catalog_item,
        contract_template: str_of(&template, "name").to_owned(),
        customer,
        property: str_of(&property, "name").to_owned(),
        phone_base: 5_125_550_100,
        users,
        technician,
        truck: str_of(&truck, "name").to_owned(),
        facility: str_of(&facility, "name").to_owned(),
        work_order: str_of(&work_order, "name").to_owned(),
    }
}

/// `crm.fieldops.v1` of `crm.fieldops.v1.TruckService`.
fn package(service: &str) -> &str {
    service.rsplit_once('.').map_or(service, |(p, _)| p)
}

/// The service's schema: `fieldops` of `crm.fieldops.v1.TruckService`.
fn schema_of(service: &str) -> &str {
    package(service).split('.').nth(1).unwrap_or_default()
}

/// The catalog role that reads the service's resources and writes none.
fn viewer_role(service: &str) -> &'static str {
    match schema_of(service) {
        "fieldops" => "fieldops.viewer",
        _ => "crm.viewer",
    }
}

/// Runs the whole suite for `f`; panics naming the property that does not hold.
#[allow(
    clippy::too_many_lines,
    reason = "one property after the other, in order"
)]
async fn conforms(f: &Fixture) {
    let env = Env::new().await;
    let w = world(&env).await;
    let s = f.service;
    let (create, get, list, update, delete, undelete) = (
        format!("Create{}", f.singular),
        format!("Get{}", f.singular),
        format!("List{}", f.plural),
        format!("Update{}", f.singular),
        format!("Delete{}", f.singular),
        format!("Undelete{}", f.singular),
    );
    let token = env.token.clone();
    let parent = env.parent();
    let create_body = |i: usize, request_id: &str| {
        let mut b = json!({"parent": parent, "request_id": request_id});
        b[f.field] = (f.body)(&w, i);
        b
    };

    // Rows the world made (a customer, a property) are not the fixture's.
    let world_rows: Vec<String> = {
        let l = rpc(
            &env,
            &token,
            s,
            &list,
            json!({"parent": parent, "show_deleted": true}),
        )
        .await
        .unwrap();
        names(&l, f.list_field)
    };
    let ours = |l: &Value| -> Vec<String> {
        names(l, f.list_field)
            .into_iter()
            .filter(|n| !world_rows.contains(n))
            .collect()
    };

    // Create, and a retry of the same request_id: one resource, the same answer.
    let rid = Uuid::new_v4().to_string();
    let a = rpc(&env, &token, s, &create, create_body(0, &rid))
        .await
        .unwrap();
    let name = str_of(&a, "name").to_owned();
    assert!(name.starts_with(&format!("{parent}/")), "{s}: name {name}");
    let again = rpc(&env, &token, s, &create, create_body(0, &rid))
        .await
        .unwrap();
    assert_eq!(again, a, "{s}: a retried create answers the original");
    let reused = rpc(&env, &token, s, &create, create_body(5, &rid))
        .await
        .unwrap_err();
    assert_eq!(
        reused.code(),
        Code::InvalidArgument,
        "{s}: request_id reused: {reused:?}"
    );
    let b = rpc(
        &env,
        &token,
        s,
        &create,
        create_body(1, &Uuid::new_v4().to_string()),
    )
    .await
    .unwrap();

    // Get answers what Create did (redacted fields aside: the default view hides them).
    let got = rpc(&env, &token, s, &get, json!({"name": name}))
        .await
        .unwrap();
    let mut shown = a.clone();
    for (field, _) in f.redacted {
        shown.as_object_mut().unwrap().remove(*field);
    }
    assert_eq!(got, shown, "{s}: Get differs from Create");

    // List: both, exactly once; ascending and descending differ.
    let list_body = |order: &str, show_deleted: bool| json!({"parent": parent, "order_by": order, "show_deleted": show_deleted});
    let asc = rpc(
        &env,
        &token,
        s,
        &list,
        list_body(&format!("{} asc", f.text_order), false),
    )
    .await
    .unwrap();
    let desc = rpc(
        &env,
        &token,
        s,
        &list,
        list_body(&format!("{} desc", f.text_order), false),
    )
    .await
    .unwrap();
    let (up, mut down) = (ours(&asc), ours(&desc));
    assert_eq!(up.len(), 2, "{s}: one row per request_id: {up:?}");
    assert_ne!(up, down, "{s}: asc and desc list the same order");
    down.reverse();
    assert_eq!(up, down, "{s}: desc is asc reversed");
    for item in asc[f.list_field].as_array().unwrap() {
        for (field, _) in f.redacted {
            assert!(
                item.get(*field).is_none_or(|v| v.as_str() == Some("")),
                "{s}: {field} listed"
            );
        }
    }

    // Update with the etag; the old etag is stale afterwards (Update and Delete: ABORTED).
    let (path, value) = (f.update.0, (f.update.1)());
    let mut changed = json!({"name": name, "etag": a["etag"]});
    changed[path] = value.clone();
    let mut req = json!({"update_mask": mask(path)});
    req[f.field] = changed.clone();
    let updated = rpc(&env, &token, s, &update, req.clone()).await.unwrap();
    assert_eq!(updated[path], value, "{s}: update did not apply");
    let stale = rpc(&env, &token, s, &update, req).await.unwrap_err();
    assert_eq!(
        stale.code(),
        Code::Aborted,
        "{s}: stale etag on Update: {stale:?}"
    );
    let stale = rpc(
        &env,
        &token,
        s,
        &delete,
        json!({"name": name, "etag": a["etag"]}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        stale.code(),
        Code::Aborted,
        "{s}: stale etag on Delete: {stale:?}"
    );

    // Another organization's administrator: refused everywhere, and nothing changes.
    let other = env.server.token(Uuid::now_v7(), &["org.admin"]);
    let before = rpc(&env, &token, s, &get, json!({"name": name}))
        .await
        .unwrap();
    let customs = (f.custom)(&name);
    let mut reads_before = Vec::new();
    for c in customs.iter().filter(|c| !c.write) {
        reads_before.push(
            rpc(&env, &token, c.service, c.method, c.body.clone())
                .await
                .unwrap(),
        );
    }
    for c in &customs {
        let r = rpc(&env, &other, c.service, c.method, c.body.clone()).await;
        assert!(
            refused(&r),
            "{s}: {} with another organization's token: {r:?}",
            c.method
        );
    }
    let mut foreign = json!({"update_mask": mask(path)});
    foreign[f.field] = json!({"name": name});
    foreign[f.field][path] = (f.update.1)();
    for (method_name, body) in [
        (get.as_str(), json!({"name": name})),
        (list.as_str(), list_body("", true)),
        (update.as_str(), foreign.clone()),
        (delete.as_str(), json!({"name": name})),
        (undelete.as_str(), json!({"name": name})),
        (create.as_str(), create_body(7, "")),
    ] {
        let r = rpc(&env, &other, s, method_name, body).await;
        assert!(
            refused(&r),
            "{s}: {method_name} with another organization's token: {r:?}"
        );
    }
    // A read-only role cannot write.
    let viewer = env.server.token(env.org, &[viewer_role(s)]);
    for (method_name, body) in [
        (create.as_str(), create_body(8, "")),
        (update.as_str(), foreign),
        (delete.as_str(), json!({"name": name})),
        (undelete.as_str(), json!({"name": name})),
    ] {
        let r = rpc(&env, &viewer, s, method_name, body).await;
        assert!(
            matches!(&r, Err(st) if st.code() == Code::PermissionDenied),
            "{s}: {method_name} as a viewer: {r:?}"
        );
    }
    for c in customs.iter().filter(|c| c.write) {
        let r = rpc(&env, &viewer, c.service, c.method, c.body.clone()).await;
        assert!(
            matches!(&r, Err(st) if st.code() == Code::PermissionDenied),
            "{s}: {} as a viewer: {r:?}",
            c.method
        );
    }
    let after = rpc(&env, &token, s, &get, json!({"name": name}))
        .await
        .unwrap();
    assert_eq!(after, before, "{s}: a refused call changed the resource");
    let mut reads_after = Vec::new();
    for c in customs.iter().filter(|c| !c.write) {
        reads_after.push(
            rpc(&env, &token, c.service, c.method, c.body.clone())
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        reads_after, reads_before,
        "{s}: a refused custom call changed something"
    );
    // And the owner's own custom calls get past permission and tenancy (the refusals above
    // were about the caller; the call itself may still fail its own rules, e.g. consent).
    for c in customs.iter().filter(|c| c.write) {
        let r = rpc(&env, &token, c.service, c.method, c.body.clone()).await;
        assert!(!refused(&r), "{s}: {} by the owner: {r:?}", c.method);
    }

    // Delete hides it from List unless show_deleted; Undelete brings it back.
    let deleted = rpc(&env, &token, s, &delete, json!({"name": name}))
        .await
        .unwrap();
    assert!(deleted.get("delete_time").is_some(), "{s}: no delete_time");
    let live = rpc(&env, &token, s, &list, list_body("", false))
        .await
        .unwrap();
    assert_eq!(
        ours(&live),
        [str_of(&b, "name")],
        "{s}: deleted still listed"
    );
    let all = rpc(&env, &token, s, &list, list_body("", true))
        .await
        .unwrap();
    assert!(ours(&all).contains(&name), "{s}: show_deleted misses it");
    let restored = rpc(&env, &token, s, &undelete, json!({"name": name}))
        .await
        .unwrap();
    assert!(restored.get("delete_time").is_none(), "{s}: still deleted");

    // Redacted values reach neither the audit log nor the events.
    for (field, secret) in f.redacted {
        let audit = rpc(
            &env,
            &token,
            &format!("{}.AuditService", package(s)),
            "ListAuditEntries",
            json!({"parent": parent, "filter": format!("resource = \"{name}\"")}),
        )
        .await
        .unwrap();
        assert!(
            !audit.to_string().contains(secret),
            "{s}: {field} in the audit log"
        );
        let in_events = count(
            &env.db,
            &format!(
                "SELECT count(*) AS n FROM {}.outbox WHERE position(convert_to('{secret}', \
                 'UTF8') in payload) > 0",
                schema_of(s)
            ),
        )
        .await;
        assert_eq!(in_events, 0, "{s}: {field} in an event");
    }
}

#[tokio::test]
async fn every_standard_resource_is_declared() {
    let declared: Vec<&str> = fixtures().iter().map(|f| f.service).collect();
    let pool = crm_proto::json::pool().unwrap();
    let mut missing = Vec::new();
    for service in pool
        .services()
        .filter(|s| s.full_name().starts_with("crm."))
    {
        let methods: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
        let standard = STANDARD
            .iter()
            .all(|verb| methods.iter().any(|m| m.starts_with(verb)));
        if standard && !declared.contains(&service.full_name()) {
            missing.push(service.full_name().to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "standard resources without a fixture: {missing:?}"
    );
}

macro_rules! conformance {
    ($($test:ident => $service:literal),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let f = fixtures().into_iter().find(|f| f.service == $service).unwrap();
                conforms(&f).await;
            }
        )*

        /// The services the tests above run: every fixture must be among them.
        const TESTED: &[&str] = &[$($service),*];
    };
}

conformance! {
    customers_conform => "crm.core.v1.CustomerService",
    contacts_conform => "crm.core.v1.ContactService",
    properties_conform => "crm.core.v1.PropertyService",
    equipment_conforms => "crm.core.v1.EquipmentService",
    tickets_conform => "crm.core.v1.TicketService",
    inventory_items_conform => "crm.core.v1.InventoryItemService",
    activities_conform => "crm.core.v1.ActivityService",
    conversations_conform => "crm.core.v1.ConversationService",
    call_dispositions_conform => "crm.core.v1.CallDispositionService",
    call_logs_conform => "crm.core.v1.CallLogService",
    sync_logs_conform => "crm.core.v1.SyncLogService",
    catalog_items_conform => "crm.core.v1.CatalogItemService",
    invoices_conform => "crm.core.v1.InvoiceService",
    quotes_conform => "crm.core.v1.QuoteService",
    signature_requests_conform => "crm.core.v1.SignatureRequestService",
    contract_templates_conform => "crm.core.v1.ContractTemplateService",
    contracts_conform => "crm.core.v1.ContractService",
    message_templates_conform => "crm.core.v1.MessageTemplateService",
    campaigns_conform => "crm.core.v1.CampaignService",
    workflows_conform => "crm.core.v1.WorkflowService",
    pricing_zones_conform => "crm.core.v1.PricingZoneService",
    pricing_tiers_conform => "crm.core.v1.PricingTierService",
    pricing_rules_conform => "crm.core.v1.PricingRuleService",
    technicians_conform => "crm.fieldops.v1.TechnicianService",
    trucks_conform => "crm.fieldops.v1.TruckService",
    disposal_facilities_conform => "crm.fieldops.v1.DisposalFacilityService",
    shifts_conform => "crm.fieldops.v1.ShiftService",
    time_off_periods_conform => "crm.fieldops.v1.TimeOffPeriodService",
    certifications_conform => "crm.fieldops.v1.CertificationService",
    licenses_conform => "crm.fieldops.v1.LicenseService",
    work_orders_conform => "crm.fieldops.v1.WorkOrderService",
    inspections_conform => "crm.fieldops.v1.InspectionService",
    waste_manifests_conform => "crm.fieldops.v1.WasteManifestService",
}

#[test]
fn every_fixture_runs() {
    for f in fixtures() {
        assert!(
            TESTED.contains(&f.service),
            "{} has no conformance test",
            f.service
        );
    }
}
