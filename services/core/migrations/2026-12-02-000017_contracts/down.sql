DROP TABLE contracts;
DROP TABLE contract_templates;
