"""campaigns: PostgreSQL store, outbound campaigns, analytics, dashboard (issue #4)."""
