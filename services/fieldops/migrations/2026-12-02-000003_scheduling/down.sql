DROP TABLE scheduling_settings;
