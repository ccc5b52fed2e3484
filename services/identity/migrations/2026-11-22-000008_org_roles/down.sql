DROP TABLE org_roles;
