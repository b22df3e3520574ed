"""HTTP plumbing shared by every router: request ids, transactions, auth, problem details."""
