DROP TABLE stock_adjustments;
DROP TABLE stock_levels;
DROP TABLE inventory_items;
