"""Identity vigilance: the queue of messages whose identity conflicts, resolved by the lab's staff;
identity statuses; merges and unmerges (``service``)."""
