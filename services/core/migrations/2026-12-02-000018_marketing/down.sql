DROP TABLE workflow_cursors;
DROP TABLE enrollments;
DROP TABLE workflows;
DROP TABLE campaigns;
DROP TABLE message_templates;
