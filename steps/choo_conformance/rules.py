"""The contract's rules by id, with a short title for reports
(CONTRACT.md sections 2 and 3)."""

RULES = {
    "W1": "empty job_id is INVALID_ARGUMENT, nothing streamed",
    "W2": "unknown job is NOT_FOUND naming the job",
    "W3": "every event reaches the client in order, fields intact; ends OK",
    "W4": "from_sequence is handed to the subscription unchanged",
    "W5": "a client that cancels is released promptly",
    "W6": "shutdown ends open watches UNAVAILABLE",
    "W7": "a failed delivery ends that watch only, released",
    "W8": "terminal job from 0 ends OK at once, no events",
    "W9": "sequences start at 1, contiguous, never renumbered",
    "W10": "from_sequence is inclusive; 0 and 1 mean the first",
    "W11": "negative from_sequence is INVALID_ARGUMENT",
    "W12": "terminal job replays from from_sequence, then OK",
    "W13": "replay hands over to live with no gap or duplicate",
    "W14": "a watcher gets every event up to the last, then OK",
    "W15": "a stalled watcher blocks nothing",
    "W16": "many watchers see the identical sequence",
    "W17": "events survive a daemon restart unchanged",
    "W18": "a new watch during shutdown is UNAVAILABLE",
    "R1": "StartJob validates its fields",
    "R2": "StartJob during shutdown is UNAVAILABLE",
    "R3": "StartJob returns a new job, visible at once",
    "R4": "StartJob on a busy feature branch attaches or refuses",
    "R5": "StopJob: errors, graceful and forced stops",
    "R6": "GetJobStatus: times, errors, units",
    "R7": "ListJobs: all, filtered, newest first",
    "R8": "Shutdown: waiting, forced, only once",
    "R9": "Health: healthy, active jobs, version",
    "R10": "every error is a contract status, never UNKNOWN/INTERNAL",
}


def is_rule(tag: str) -> bool:
    return tag in RULES
