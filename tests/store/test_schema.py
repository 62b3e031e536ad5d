from labvault.store import schema as t


def test_every_primary_key_starts_with_the_tenant():
    """F1: every primary key starts with the tenant."""
    for table in t.metadata.sorted_tables:
        assert next(iter(table.primary_key.columns)).name == "tenant_id", table.name


def test_personal_tables_hold_no_clear_personal_column():
    """C1, M3: personal tables hold no clear personal column."""
    allowed_clear = {
        "tenant_id",
        "patient_id",
        "prescriber_id",
        "request_id",
        "specimen_id",
        "result_id",
        "pseudonym",
        "key_version",
        "identity_status",
        "ins_oid",
        "status",
        "purpose",
        "version",
        "state",
        "created_at",
        "wrapped",
        "public",
        # canary: a keyed hash of a planted patient's id (a blind index), and the package it was put in
        "marker",
        "package_id",
        "created_by",
        # quarantine: when and how a refused message came, how big it is, what became of it
        "quarantine_id",
        "received_at",
        "format",
        "feed",
        "size",
        "resolved_at",
        "resolved_by",
        # identities: the merge link and the last status change (who, when, an evidence code)
        "merged_into",
        "status_changed_by",
        "status_changed_at",
        "status_evidence",
        "local_id",
        # the identity-vigilance queue: a reason code, the identity pointed to, what became of it
        "queue_id",
        "reason",
        "candidate_id",
        "resolved_to",
        # merges: which pseudonymous ids, the requests moved, by whom and when
        "merge_id",
        "kept_id",
        "merged_id",
        "requests",
        "merged_by",
        "merged_at",
        "source",
        "undone_by",
        "undone_at",
        # result versions: their number, when recorded, the message's idempotency key (a hash)
        "version_id",
        "recorded_at",
        "message_key",
        # the lab's workflow (revision 0017): codes, account ids, times, versions; never a value
        "urgency",
        "entered_by",
        "status_at",
        "nonconformity",
        "workflow",
        "technical_by",
        "biological_by",
        "catalogue_version",
        "released_by_rule",
        # call-back tasks: which result, when opened and due, open or done, by whom and when
        "task_id",
        "opened_at",
        "due_at",
        "closed_by",
        "closed_at",
        # a lab's part of a leak analysis: counts, categories and kinds of data, the source package's
        # reference (the affected patients' ids are sealed in patients_enc)
        "analysis_id",
        "patients",
        "records",
        "ambiguous",
        "categories",
        "fields",
    }
    for name in t.PERSONAL_TABLES:
        for col in t.metadata.tables[name].columns:
            assert col.name.endswith(("_enc", "_bidx")) or col.name in allowed_clear, f"{name}.{col.name}"
