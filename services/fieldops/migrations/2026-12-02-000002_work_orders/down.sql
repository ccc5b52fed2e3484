DROP TABLE waste_manifests;
DROP TABLE work_order_events;
DROP TABLE work_order_assignments;
DROP TABLE work_orders;
