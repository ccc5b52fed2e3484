DROP TABLE refunds;
DROP TABLE payments;
DROP TABLE invoice_counters;
DROP TABLE invoices;
