@watch_job @scripted
Feature: WatchJob streams a job's events
  WatchJob is a server-streaming RPC: a client names a job and a sequence to
  start from, and receives the job's events until the job ends. These eight
  scenarios are the rows of the original task card's backpressure table, each
  tagged with the Go test it came from and the contract rule it checks.

  As in the Go tests, the job manager is a scripted double: it hands the
  servicer a scripted event feed, remembers the sequence it was asked to start
  from, and notices when the subscription is released. That double exists only
  in process; watch_job_daemon.feature checks the same rules against a whole
  daemon, over a channel too.

  @W1
  Rule: W1 An empty job_id is refused

    @TestGRPC_WatchJob_ValidatesJobID
    Scenario: An empty job_id is refused before anything is streamed
      Given the job manager knows no jobs
      When a client watches job "" from sequence 0
      Then the watch ends with status INVALID_ARGUMENT and details "job_id is required"
      And the client received no events
      And the job manager was never asked for a subscription

  @W2
  Rule: W2 An unknown job is NOT_FOUND, naming it

    @TestGRPC_WatchJob_JobNotFound
    Scenario: Watching an unknown job is NOT_FOUND, naming the job
      Given the job manager knows no jobs
      When a client watches job "nonexistent" from sequence 0
      Then the watch ends with status NOT_FOUND and details naming "nonexistent"
      And the client received no events
      And the job manager was never asked for a subscription

  @W3
  Rule: W3 Every event reaches the client in order, intact; the stream ends OK

    @TestGRPC_WatchJob_StreamsEvents
    Scenario: Every event of the feed reaches the client, in order, fields intact
      Given a running job "job-stream" whose feed yields these events and then closes:
        | sequence | event_type     | unit_id | payload_json             | timestamp                      |
        | 1        | unit_started   | unit-1  | {"unit": "unit-1"}       | 2026-01-02T03:04:05.000000001Z |
        | 2        | task_completed | unit-1  | {"task": 2, "ok": true}  | 2026-01-02T03:04:06.250000000Z |
        | 3        | unit_completed | unit-1  | {}                       | 2026-01-02T03:04:07.999999999Z |
      When a client watches job "job-stream" from sequence 0
      Then the watch ends with status OK
      And the client received exactly the feed's events, in order, every field intact
      And every subscription is released

  @W4
  Rule: W4 from_sequence reaches the subscription unchanged

    @TestGRPC_WatchJob_ReplayFromSequence
    Scenario: from_sequence is handed to the subscription unchanged
      Given a running job "job-replay" whose feed yields these events and then closes:
        | sequence | event_type     | unit_id | payload_json | timestamp                      |
        | 3        | task_completed | unit-1  | {"task": 3}  | 2026-01-02T03:04:05.000000000Z |
        | 4        | unit_completed | unit-1  | {}           | 2026-01-02T03:04:06.000000000Z |
      When a client watches job "job-replay" from sequence 2
      Then the job manager was asked to subscribe to "job-replay" from sequence 2
      And the watch ends with status OK
      And the client received exactly the feed's events, in order, every field intact
      And every subscription is released

  @W5
  Rule: W5 A client that cancels is released promptly

    @TestGRPC_WatchJob_ClientDisconnect
    Scenario: A client that cancels releases its watch at once
      Given a running job "job-disconnect" whose feed blocks without events
      When a client watches job "job-disconnect" from sequence 0
      And the servicer has subscribed to "job-disconnect"
      And the client cancels the watch
      Then the watch handler returns within 1 second with status CANCELLED
      And every subscription is released

  @W6
  Rule: W6 Shutdown ends open watches UNAVAILABLE

    @TestGRPC_WatchJob_ServerShutdown
    Scenario: Open watches end UNAVAILABLE when the daemon starts shutting down
      Given a running job "job-shutdown" whose feed blocks without events
      When a client watches job "job-shutdown" from sequence 0
      And the servicer has subscribed to "job-shutdown"
      And the daemon starts shutting down
      Then within 1 second the watch ends with status UNAVAILABLE and details "daemon is shutting down"
      And every subscription is released

  @W7
  Rule: W7 A failed delivery ends that watch only

    @TestGRPC_WatchJob_SendError
    Scenario: A delivery that fails mid-stream ends that watch only
      Given a running job "job-send-err" whose feed always has more events pending
      When client "A" watches job "job-send-err" from sequence 0
      And client "B" watches job "job-send-err" from sequence 0
      And client "A" has received at least 2 events
      And the connection of client "A" fails while events are pending
      Then the watch handler of client "A" returns within 1 second with a non-OK status
      And the subscription of client "A" is released
      And client "B" goes on receiving events: at least 20 more, contiguous from sequence 1

  @W8
  Rule: W8 A terminal job watched from 0 ends OK at once

    @TestGRPC_WatchJob_CompletedJobNoReplay
    Scenario: A completed job with from_sequence 0 ends at once with no events
      Given a completed job "job-done" whose feed yields these events and then closes:
        | sequence | event_type     | unit_id | payload_json | timestamp                      |
        | 1        | orch.started   |         | {}           | 2026-01-02T03:04:05.000000000Z |
        | 2        | orch.completed |         | {}           | 2026-01-02T03:04:06.000000000Z |
      When a client watches job "job-done" from sequence 0
      Then the watch ends with status OK
      And the client received no events
      And the job manager was never asked for a subscription
