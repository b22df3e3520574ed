"""Credit notes against open or paid invoices, and the account balance they can credit."""
