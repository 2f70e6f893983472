"""The front end restarted in the middle of a bulk job: the job does not notice (every task
answered exactly once) and the new front end serves at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from schemas.settings import Settings
from tests.integration.harness import (
    LOCAL,
    committed_results,
    front_end,
    process_env,
    spec_body,
    wait_live,
)
from tests.reliability.support import (
    await_results,
    bulk_tasks,
    new_job_id,
    process,
    publish_tasks,
    tally,
)

pytestmark = [pytest.mark.kafka, pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(600)]
BULK = 160


async def test_frontend_restart_leaves_a_bulk_job_alone(settings: Settings, tmp_path: Path) -> None:
    tasks = bulk_tasks(LOCAL, BULK, max_tokens=16, job_id=new_job_id())
    ids = {t.request_id for t in tasks}
    with process(
        ["worker", "--model", LOCAL, "--model", "echo"], process_env(settings), tmp_path / "w.log"
    ):
        async with front_end(settings) as client:
            await wait_live(client, LOCAL, "echo")
            await publish_tasks(settings, tasks)
            before = await client.post("/v1/completion", json=spec_body(model="echo"))
        stopped = time.monotonic()
        done_at_restart = tally(await committed_results(settings, idle_s=0.5), ids).received
        async with front_end(settings) as client:
            await wait_live(client, "echo")
            after = await client.post("/v1/completion", json=spec_body(model="echo"))
            back_s = time.monotonic() - stopped
        counted = await await_results(settings, ids, timeout_s=300)
    print(
        f"\n{done_at_restart}/{BULK} bulk tasks done when the front end restarted; {counted}; "
        f"new front end served {back_s:.1f} s after the old one stopped"
    )
    assert before.status_code == 200 and after.status_code == 200, after.text
    assert done_at_restart < BULK, "the job was over before the restart; make it longer"
    assert counted.missing == 0 and counted.duplicates == 0 and counted.errors == 0, counted
