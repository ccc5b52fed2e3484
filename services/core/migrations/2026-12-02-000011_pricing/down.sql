DROP TABLE pricing_rules;
DROP TABLE pricing_tiers;
DROP TABLE pricing_zones;
DROP TABLE catalog_items;
