//! `crm.core.v1.InventoryItemService`: stocked items (SKU unique per organization) and their
//! quantities per location, which change only through recorded adjustments and never go below
//! zero. Adjustments of one item are serialised by locking the item row.

use chrono::{DateTime, Utc};
use crm_auth::layer::principal_of;
use crm_auth::{MethodPolicy, Requirement, permission};
use crm_db::OrgId;
use crm_db::filter::{self, Op};
use crm_platform::ApiError;
use crm_platform::api::listing::Listing;
use crm_platform::api::names::{self, child_name};
use crm_platform::api::time::timestamp;
use crm_platform::api::validate::{self, Violations};
use crm_platform::mutation::{self, IdempotencyKey};
use crm_proto::core_v1::{
    AdjustStockRequest, CreateInventoryItemRequest, DeleteInventoryItemRequest,
    GetInventoryItemRequest, InventoryItem, ListInventoryItemsRequest, ListInventoryItemsResponse,
    ListStockAdjustmentsRequest, ListStockAdjustmentsResponse, ListStockLevelsRequest,
    ListStockLevelsResponse, StockAdjustment, StockLevel, UndeleteInventoryItemRequest,
    UpdateInventoryItemRequest,
};
use crm_resource::audit::{self, Action, Change};
use crm_resource::{Call, Field, Resource, Store, Write, emit, not_found};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::schema::inventory_items::{self, dsl as it};
use crate::schema::stock_adjustments::dsl as sa;
use crate::schema::stock_levels::dsl as sl;
use crate::status;

const SERVICE: &str = "crm.core.v1.InventoryItemService";
/// The largest quantity or reorder point.
const MAX_QUANTITY: i64 = 1_000_000_000;

/// The permission of every RPC.
#[must_use]
pub fn policy() -> MethodPolicy {
    let (read, write) = (permission::INVENTORY_READ, permission::INVENTORY_WRITE);
    InventoryItemApi::policy(read, write, write)
        .with(SERVICE, "AdjustStock", Requirement::Permission(write))
        .with(SERVICE, "ListStockLevels", Requirement::Permission(read))
        .with(
            SERVICE,
            "ListStockAdjustments",
            Requirement::Permission(read),
        )
}

/// The columns of `core.inventory_items` besides the standard ones (the total is kept by
/// AdjustStock).
#[derive(Debug, Clone, Default, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = inventory_items, treat_none_as_null = true)]
pub struct ItemFields {
    pub sku: String,
    pub display_name: String,
    pub unit: String,
    pub reorder_point: i64,
    pub notes: String,
    pub total_on_hand: i64,
}

fn is_sku(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// The inventory item resource.
#[derive(Debug)]
pub struct InventoryItems;

impl Resource for InventoryItems {
    type Proto = InventoryItem;
    type Fields = ItemFields;
    type Table = inventory_items::table;
    const RESOURCE_TYPE: &'static str = "core.crm/InventoryItem";
    const COLLECTION: &'static str = "inventoryItems";
    const FIELD: &'static str = "inventory_item";
    const FIELDS: &'static [Field<Self>] = &[
        Field::<Self>::updatable("sku", |i, x, f| {
            if !is_sku(x.sku.trim()) {
                i.push("INVALID_SKU", "1 to 64 of A-Z, 0-9, '-', '_' and '.'");
            }
            x.sku.trim().clone_into(&mut f.sku);
        })
        .filter(|n, op, v| crm_db::filter_text!(it::sku, n, op, v)),
        Field::<Self>::updatable("display_name", |i, x, f| {
            f.display_name = i.required_text(&x.display_name, 200);
        })
        .filter(|n, op, v| crm_db::filter_text!(it::display_name, n, op, v)),
        Field::<Self>::updatable("unit", |i, x, f| {
            if !validate::is_slug(&x.unit) {
                i.push("INVALID_UNIT", "a unit such as each, gallon or lb");
            }
            f.unit.clone_from(&x.unit);
        })
        .filter(|n, op, v| crm_db::filter_text!(it::unit, n, op, v)),
        Field::<Self>::updatable("reorder_point", |i, x, f| {
            f.reorder_point = i.in_range(x.reorder_point, 0..=MAX_QUANTITY, "0 to 1,000,000,000");
        }),
        Field::<Self>::updatable("notes", |i, x, f| f.notes = i.text(&x.notes, 10_000)),
        Field::<Self>::output("total_on_hand"),
        Field::<Self>::output("needs_reorder").filter(|n, op, v| {
            let flag = crm_resource::store::bool_value(n, v)?;
            let low = it::total_on_hand.le(it::reorder_point);
            match (op, flag) {
                (Op::Eq, true) | (Op::Ne, false) => Ok(Box::new(low)),
                (Op::Eq, false) | (Op::Ne, true) => {
                    Ok(Box::new(it::total_on_hand.gt(it::reorder_point)))
                }
                (Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::Has, _) => {
                    Err(filter::unsupported_op(n, op))
                }
            }
        }),
    ];

    fn to_proto(_org: Uuid, f: ItemFields) -> InventoryItem {
        InventoryItem {
            needs_reorder: f.total_on_hand <= f.reorder_point,
            sku: f.sku,
            display_name: f.display_name,
            unit: f.unit,
            reorder_point: f.reorder_point,
            notes: f.notes,
            total_on_hand: f.total_on_hand,
            ..InventoryItem::default()
        }
    }
    fn order_text(f: &ItemFields) -> &str {
        &f.display_name
    }
}

crm_resource::standard_store!(
    InventoryItems,
    table = inventory_items,
    time = create_time,
    text = display_name
);

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = crate::schema::stock_adjustments)]
struct AdjustmentRow {
    id: Uuid,
    item_id: Uuid,
    location: String,
    delta: i64,
    quantity_after: i64,
    reason: String,
    reference: String,
    actor: String,
    create_time: DateTime<Utc>,
}

impl AdjustmentRow {
    fn into_proto(self, org: Uuid) -> StockAdjustment {
        StockAdjustment {
            name: format!(
                "{}/adjustments/{}",
                child_name(org, "inventoryItems", self.item_id),
                self.id
            ),
            location: self.location,
            delta: self.delta,
            quantity_after: self.quantity_after,
            reason: self.reason,
            reference: self.reference,
            actor: self.actor,
            create_time: Some(timestamp(self.create_time)),
        }
    }
}

async fn adjust(
    api: &InventoryItemApi,
    call: Call,
    b: AdjustStockRequest,
) -> Result<StockAdjustment, ApiError> {
    let mut v = Violations::new();
    let parsed = crm_resource::parse_name::<InventoryItems>(&mut v, &b.name, "name");
    if !validate::is_slug(&b.location) {
        v.push(
            "location",
            "INVALID_LOCATION",
            "a location such as main-yard or truck-7",
        );
    }
    if b.delta == 0 || !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&b.delta) {
        v.push(
            "delta",
            "OUT_OF_RANGE",
            "a non-zero change of at most 1,000,000,000 either way",
        );
    }
    validate::required_text(&mut v, "reason", &b.reason, 200);
    validate::optional_text(&mut v, "reference", &b.reference, 500);
    let mut fingerprint = b.clone();
    fingerprint.request_id.clear();
    let key = IdempotencyKey::from_request(&mut v, &call.method, &b.request_id, &fingerprint);
    v.finish()?;
    let (org, id) =
        parsed.ok_or_else(|| ApiError::Internal("name parsed without violation".into()))?;
    names::require_same_organization(&call.principal, org)?;
    let deadline = call.deadline;
    let write = mutation::idempotent(api.ctx.pool.clone(), org, key, move |conn| {
        Box::pin(async move {
            // The item row lock serialises adjustments of this item.
            let item = InventoryItems::find(conn, OrgId(org), id, true)
                .await?
                .ok_or_else(|| not_found::<InventoryItems>(&b.name))?;
            if item.std.deleted() {
                return Err(ApiError::FailedPrecondition {
                    reason: "RESOURCE_DELETED",
                    message: "stock of a deleted item cannot change".into(),
                });
            }
            let here: i64 = sl::stock_levels
                .filter(sl::organization_id.eq(org))
                .filter(sl::item_id.eq(id))
                .filter(sl::location.eq(&b.location))
                .select(sl::quantity)
                .first(&mut { conn })
                .await
                .optional()?
                .unwrap_or(0);
            let after = here + b.delta;
            if after < 0 {
                return Err(ApiError::FailedPrecondition {
                    reason: "INSUFFICIENT_STOCK",
                    message: format!(
                        "{} has {here} on hand; cannot remove {}",
                        b.location, -b.delta
                    ),
                });
            }
            diesel::insert_into(sl::stock_levels)
                .values((
                    sl::organization_id.eq(org),
                    sl::item_id.eq(id),
                    sl::location.eq(&b.location),
                    sl::quantity.eq(after),
                ))
                .on_conflict((sl::organization_id, sl::item_id, sl::location))
                .do_update()
                .set(sl::quantity.eq(after))
                .execute(&mut { conn })
                .await?;
            diesel::update(it::inventory_items)
                .filter(it::organization_id.eq(org))
                .filter(it::id.eq(id))
                .set(it::total_on_hand.eq(it::total_on_hand + b.delta))
                .execute(&mut { conn })
                .await?;
            let updated = crm_resource::to_proto::<InventoryItems>(
                InventoryItems::touch(conn, OrgId(org), id, call.actor()).await?,
            );
            let row: AdjustmentRow = diesel::insert_into(sa::stock_adjustments)
                .values((
                    sa::organization_id.eq(org),
                    sa::id.eq(Uuid::now_v7()),
                    sa::item_id.eq(id),
                    sa::location.eq(&b.location),
                    sa::delta.eq(b.delta),
                    sa::quantity_after.eq(after),
                    sa::reason.eq(&b.reason),
                    sa::reference.eq(&b.reference),
                    sa::actor.eq(call.actor()),
                ))
                .returning(AdjustmentRow::as_returning())
                .get_result(&mut { conn })
                .await?;
            let w = Write {
                org: OrgId(org),
                call: &call,
                request_id: &b.request_id,
            };
            emit(conn, w, "stock_adjusted", &updated, &b.name, None).await?;
            audit::record(
                conn,
                OrgId(org),
                w.entry(&b.name, Action::Custom("adjust_stock")),
                &[
                    Change {
                        field: format!("stock_levels[{}]", b.location),
                        before: here.to_string(),
                        after: after.to_string(),
                    },
                    Change {
                        field: "total_on_hand".into(),
                        before: item.fields.total_on_hand.to_string(),
                        after: updated.total_on_hand.to_string(),
                    },
                ],
            )
            .await?;
            Ok(row.into_proto(org))
        })
    });
    api.ctx.commit(deadline, write).await
}

/// The organization and item of a child-collection parent, with the listing begun.
fn begin_child_list(
    api: &InventoryItemApi,
    principal: &crm_auth::Principal,
    parent: &str,
    page_size: i32,
    page_token: &str,
    method: &str,
) -> Result<(Listing, Uuid), ApiError> {
    let (org, id) = names::parse_child(parent, "inventoryItems", "parent")?;
    let listing = Listing::begin(
        principal,
        &api.ctx.page_tokens,
        method,
        &names::organization_name(org),
        page_size,
        page_token,
        &[parent],
        50,
        crm_platform::api::listing::MAX_PAGE_SIZE,
    )?;
    Ok((listing, id))
}

crm_resource::standard_service! {
    service = "crm.core.v1.InventoryItemService",
    server = crm_proto::core_v1::inventory_item_service_server::InventoryItemService,
    resource = InventoryItems,
    api = InventoryItemApi,
    field = inventory_item;
    create = create_inventory_item(CreateInventoryItemRequest, id = inventory_item_id);
    get = get_inventory_item(GetInventoryItemRequest, full = |_| false);
    list = list_inventory_items(ListInventoryItemsRequest, full = |_| false)
        -> ListInventoryItemsResponse.inventory_items;
    update = update_inventory_item(UpdateInventoryItemRequest);
    delete = delete_inventory_item(DeleteInventoryItemRequest);
    undelete = undelete_inventory_item(UndeleteInventoryItemRequest);

    async fn adjust_stock(
        &self,
        req: tonic::Request<AdjustStockRequest>,
    ) -> Result<tonic::Response<StockAdjustment>, tonic::Status> {
        let call = Call::of(&req, SERVICE, "adjust_stock")?;
        adjust(self, call, req.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(status)
    }

    async fn list_stock_levels(
        &self,
        req: tonic::Request<ListStockLevelsRequest>,
    ) -> Result<tonic::Response<ListStockLevelsResponse>, tonic::Status> {
        let principal = principal_of(&req)?;
        let b = req.into_inner();
        let (listing, id) = begin_child_list(
            self,
            &principal,
            &b.parent,
            b.page_size,
            &b.page_token,
            "ListStockLevels",
        )
        .map_err(status)?;
        let org = listing.org;
        let after = match listing.after.as_deref() {
            None => None,
            Some([location]) => Some(location.clone()),
            Some(_) => {
                return Err(status(ApiError::invalid("page_token", "INVALID_PAGE_TOKEN", "page_token is malformed")));
            }
        };
        let limit = listing.limit();
        let parent = b.parent.clone();
        let mut rows: Vec<(String, i64)> = crm_db::tenant::read(&self.ctx.pool, org, move |conn| {
            Box::pin(async move {
                if InventoryItems::find(conn, OrgId(org), id, false).await?.is_none() {
                    return Err(not_found::<InventoryItems>(&parent));
                }
                let mut q = sl::stock_levels
                    .filter(sl::organization_id.eq(org))
                    .filter(sl::item_id.eq(id))
                    .order(sl::location.asc())
                    .limit(limit)
                    .select((sl::location, sl::quantity))
                    .into_boxed();
                if let Some(location) = after {
                    q = q.filter(sl::location.gt(location));
                }
                Ok(q.load(&mut { conn }).await?)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.ctx.page_tokens, &mut rows, |(l, _)| vec![l.clone()]);
        Ok(tonic::Response::new(ListStockLevelsResponse {
            stock_levels: rows
                .into_iter()
                .map(|(location, quantity)| StockLevel { location, quantity })
                .collect(),
            next_page_token,
        }))
    }

    async fn list_stock_adjustments(
        &self,
        req: tonic::Request<ListStockAdjustmentsRequest>,
    ) -> Result<tonic::Response<ListStockAdjustmentsResponse>, tonic::Status> {
        let principal = principal_of(&req)?;
        let b = req.into_inner();
        let (listing, id) = begin_child_list(
            self,
            &principal,
            &b.parent,
            b.page_size,
            &b.page_token,
            "ListStockAdjustments",
        )
        .map_err(status)?;
        let org = listing.org;
        let after = listing.after_uuid().map_err(status)?;
        let limit = listing.limit();
        let parent = b.parent.clone();
        let mut rows: Vec<AdjustmentRow> = crm_db::tenant::read(&self.ctx.pool, org, move |conn| {
            Box::pin(async move {
                if InventoryItems::find(conn, OrgId(org), id, false).await?.is_none() {
                    return Err(not_found::<InventoryItems>(&parent));
                }
                let mut q = sa::stock_adjustments
                    .filter(sa::organization_id.eq(org))
                    .filter(sa::item_id.eq(id))
                    .order(sa::id.desc())
                    .limit(limit)
                    .select(AdjustmentRow::as_select())
                    .into_boxed();
                if let Some(a) = after {
                    q = q.filter(sa::id.lt(a));
                }
                Ok(q.load(&mut { conn }).await?)
            })
        })
        .await
        .map_err(status)?;
        let next_page_token = listing.finish(&self.ctx.page_tokens, &mut rows, |r| vec![r.id.to_string()]);
        Ok(tonic::Response::new(ListStockAdjustmentsResponse {
            stock_adjustments: rows.into_iter().map(|r| r.into_proto(org)).collect(),
            next_page_token,
        }))
    }
}
