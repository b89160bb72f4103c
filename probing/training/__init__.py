"""Lightning CLI front end (`probing fit|validate|test|predict`)."""
