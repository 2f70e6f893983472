"""The bulk-job client: submit a JSONL file to the bulk lanes, follow and collect its results.

The Python API (``await`` it in a notebook, ``asyncio.run`` it in a script)::

    from producer.jobs import collect, iter_results, submit

    report = await submit(settings, "prompts.jsonl", job_id="nightly-1")
    async for line in iter_results(settings, "nightly-1"):
        print(line.custom_id, line.model, line.response or line.error)
    await collect(settings, "nightly-1", Path("out.jsonl"))

One module per step: ``jobfile`` (parse and check the file), ``submission`` (publish it),
``manifest`` (the job's record on the compacted jobs topic), ``scan`` (read a topic to its
end), ``tally`` (count a job's results once each), ``collect`` (write them out), ``status``.
This package imports neither FastAPI nor ``producer.frontend``.
"""

from producer.jobs.collect import CollectReport, collect, iter_results
from producer.jobs.jobfile import JobError, JobFileInvalid
from producer.jobs.status import JobStatus, job_status, list_jobs
from producer.jobs.submission import SubmitReport, submit
from producer.jobs.tally import OutputLine

__all__ = [
    "CollectReport",
    "JobError",
    "JobFileInvalid",
    "JobStatus",
    "OutputLine",
    "SubmitReport",
    "collect",
    "iter_results",
    "job_status",
    "list_jobs",
    "submit",
]
