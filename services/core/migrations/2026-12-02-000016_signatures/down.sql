DROP TABLE signatures;
DROP TABLE signature_requests;
DROP FUNCTION signed_request_is_final();
