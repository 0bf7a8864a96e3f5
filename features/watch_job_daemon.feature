@watch_job_daemon
Feature: The seed's WatchJob rules, against a whole daemon
  watch_job.feature checks the servicer alone, with a scripted job manager.
  These scenarios check the same rules end to end: jobs and events are set up
  the way the daemon records them, and whether a watch let go of its
  subscription is read from the daemon (ListSubscriptions). W1 and W2 need
  no set-up, so they are checked in every profile; the others set up through
  the control service.

  Background:
    Given the daemon keeps its events in a fresh database

  @W1
  Rule: W1 An empty job_id is refused

    Scenario: An empty job_id is refused before anything is streamed
      When a client watches job "" from sequence 0
      Then the watch ends with status INVALID_ARGUMENT and details "job_id is required"
      And the client received no events

  @W2
  Rule: W2 An unknown job is NOT_FOUND, naming it

    Scenario: Watching an unknown job is NOT_FOUND, naming the job
      When a client watches job "no-such-job" from sequence 0
      Then the watch ends with status NOT_FOUND and details naming "no-such-job"
      And the client received no events

    Scenario: An unknown job id of 128 bytes is named whole
      When a client watches an unknown job whose id is 128 bytes long
      Then the watch ends with status NOT_FOUND and details naming all of that id
      And the client received no events

  @W3 @control
  Rule: W3 Every event reaches the client in order, intact; the stream ends OK

    Scenario: Every recorded event reaches the client in order, fields intact, then OK
      Given a running job "job-w3" that has recorded 3 events
      When a client watches job "job-w3" from sequence 0
      And the job "job-w3" records 2 more events and completes
      Then the client receives sequences 1-5 and the watch ends OK
      And every event the client received carries the type, unit, payload and timestamp it was recorded with

  @W4 @control
  Rule: W4 from_sequence reaches the subscription unchanged

    Scenario: from_sequence reaches the subscription unchanged
      Given a completed job "job-w4" that recorded 4 events
      When a client watches job "job-w4" from sequence 2
      Then the client receives sequences 2-4 and the watch ends OK
      And the job "job-w4" has had exactly one subscription, from sequence 2

  @W5 @control
  Rule: W5 A client that cancels is released promptly

    Scenario: A client that cancels has its subscription released within a second
      Given a running job "job-w5" that has recorded 1 events
      When a client watches job "job-w5" from sequence 0
      And the client has received 1 events
      And the client cancels the watch
      Then within 1 second the job "job-w5" has 0 open subscriptions

  @W6 @control
  Rule: W6 Shutdown ends open watches UNAVAILABLE

    @ends_daemon
    Scenario: Open watches end UNAVAILABLE when the daemon starts shutting down
      Given a running job "job-w6" that has recorded 1 events
      When a client watches job "job-w6" from sequence 0
      And the client has received 1 events
      And the daemon starts shutting down
      Then within 1 second the watch ends with status UNAVAILABLE and details "daemon is shutting down"

  @W7 @control
  Rule: W7 A failed delivery ends that watch only

    Scenario: A client that drops its connection mid-stream is released; others are unaffected
      Given a running job "job-w7" that has recorded 5000 events
      When client "dropper" watches job "job-w7" from sequence 0
      And client "steady" watches job "job-w7" from sequence 0
      And client "dropper" has received at least 1 events
      And the transport of client "dropper" stops accepting messages
      And the connection of client "dropper" fails while events are pending
      Then within 1 second the job "job-w7" has 1 open subscriptions
      When the job "job-w7" records 1 more event and completes
      Then client "steady" receives sequences 1-5001 and its watch ends OK

  @W8 @control
  Rule: W8 A terminal job watched from 0 ends OK at once

    Scenario: A completed job with from_sequence 0 ends at once with no events
      Given a completed job "job-w8" that recorded 3 events
      When a client watches job "job-w8" from sequence 0
      Then the watch ends with status OK
      And the client received no events
      And the job "job-w8" has had no subscription
