DROP TABLE waste_manifests;
DROP FUNCTION waste_manifest_is_final();
DROP TABLE work_order_events;
DROP TABLE work_order_assignments;
DROP TABLE work_orders;
