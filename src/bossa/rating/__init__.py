"""Rating: usage records (CDRs) priced with tariffs and the account data the sync
pipeline keeps current (SPEC S; docs/sync-and-rating.md)."""
