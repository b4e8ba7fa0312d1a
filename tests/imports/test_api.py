"""The import API: upload a small file (bounded), the job and its rejected rows; the
actor is the credential's, and roles without imports.* are refused."""

from __future__ import annotations

from bossa.access import Role
from bossa.imports import ImportSettings
from bossa.journal import Journal
from bossa.runtime import Runtime
from tests.support import api_client

CSV = "id,name,msisdn\nC-1,One,+821000000001\nC-2,Two,not-a-number\nC-3,Three,\n"


async def test_upload_then_job_and_errors(journal: Journal, db_url: str) -> None:
    runtime = Runtime.around(db_url, journal, embedded=False)
    async with api_client(runtime) as http:
        made = await http.post(
            "/imports/customers", json={"content": CSV, "file_name": "first.csv"}
        )
        assert made.status_code == 200, made.text
        body = made.json()
        assert (body["applied_now"], body["job"]["rejected"]) == (2, 1)
        assert body["job"]["created_by"].startswith("token:")
        assert body["errors"] == [
            {
                "line": 3,
                "field": "msisdn",
                "reason": "'not-a-number' is not 5-19 digits, optionally after a +",
                "raw": "C-2,Two,not-a-number",
            }
        ]
        job_id = body["job"]["id"]
        shown = await http.get(f"/imports/jobs/{job_id}")
        assert shown.json()["status"] == "done"
        assert shown.json()["file_name"] == "first.csv"
        errors = await http.get(f"/imports/jobs/{job_id}/errors")
        assert [e["line"] for e in errors.json()] == [3]
        listed = await http.get("/imports/jobs", params={"kind": "customers"})
        assert [j["id"] for j in listed.json()] == [job_id]
        again = await http.post("/imports/customers", json={"content": CSV})
        assert again.json()["already_done"] is True
        assert (await http.get("/imports/jobs/999")).status_code == 404
        actor = await http.post("/imports/customers", json={"content": CSV, "actor": "mallory"})
        assert actor.status_code == 422
    await runtime.deliverer.close()


async def test_upload_is_bounded_and_needs_its_permission(journal: Journal, db_url: str) -> None:
    runtime = Runtime.around(db_url, journal, embedded=False)
    limit = runtime.settings(ImportSettings).upload_max_bytes
    async with api_client(runtime) as http:
        big = "id,name\n" + "C-1,x\n" * (limit // 6 + 10)
        refused = await http.post("/imports/customers", json={"content": big})
        assert refused.status_code in (413, 422), refused.text
        if refused.status_code == 422:
            assert refused.json()["field"] == "content"
        bad_kind = await http.post("/imports/invoices", json={"content": CSV})
        assert bad_kind.status_code == 422
        bad_format = await http.post("/imports/customers", json={"content": "id,colour\n1,2\n"})
        assert bad_format.status_code == 422
        assert bad_format.json()["field"] == "header"
    async with api_client(runtime, role=Role.FRONT_OFFICE) as http:
        assert (await http.post("/imports/customers", json={"content": CSV})).status_code == 403
        assert (await http.get("/imports/jobs")).status_code == 403
    await runtime.deliverer.close()
