"""Lightning CLI front end (`probing fit|validate|test|predict`) and logger helpers."""
