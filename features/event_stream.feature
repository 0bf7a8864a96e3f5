@event_stream @control
Feature: A job's event stream: numbering, replay, live hand-over, durability
  The daemon records every event of a job in a durable log. A watch replays
  the log from the sequence it asks for and then follows the job live, until
  the job's last event. Jobs and their events are set up through the
  conformance control service, recorded exactly as a job's own events are.

  Background:
    Given the daemon keeps its events in a fresh database

  @W9
  Rule: W9 Sequences start at 1, are contiguous, and are never renumbered

    Scenario: Sequences start at 1, are contiguous, and replay returns them unchanged
      Given a running job "job-9" that has recorded 5 events
      When a client watches job "job-9" from sequence 1
      And the job "job-9" records 3 more events and completes
      Then the client receives sequences 1-8 and the watch ends OK
      When a second client watches job "job-9" from sequence 1
      Then the second client receives exactly the events the first client received, every field identical

    Scenario Outline: A replay from any sequence returns exactly what was delivered live
      Given a running job "job-9k" that has recorded 5 events
      When a client watches job "job-9k" from sequence 1
      And the job "job-9k" records 300 more events in batches of 7 and completes
      Then the client receives sequences 1-305 and the watch ends OK
      When a second client watches job "job-9k" from sequence <k>
      Then the second client receives exactly the events the first client received from sequence <k>, every field identical

      Examples:
        | k   |
        | 2   |
        | 6   |
        | 257 |
        | 305 |

    Scenario: Payloads come back byte for byte, live and replayed, whatever they hold
      Given a running job "job-9p" that has recorded 0 events
      When a client watches job "job-9p" from sequence 0
      And the job "job-9p" records one event with each of these payloads, and completes:
        | payload            |
        | non-ASCII text     |
        | non-canonical JSON |
        | JSON escapes       |
        | not JSON           |
        | 64 KiB             |
      Then the client receives those payloads byte for byte, in order, and the watch ends OK
      And a watch of job "job-9p" from sequence 1 returns those payloads byte for byte

    Scenario: Several callers recording on one job at once get unique, contiguous sequences
      Given a running job "job-9c" that has recorded 0 events
      When a client watches job "job-9c" from sequence 0
      And 8 callers each record 150 events on job "job-9c" at once, in batches of 1 to 4
      And the job "job-9c" completes
      Then the sequences AppendEvents answered are 1-1200, each once
      And the client receives sequences 1-1200 and the watch ends OK
      And every event the client received carries what its caller recorded with that sequence

  @W10
  Rule: W10 from_sequence is inclusive

    Scenario Outline: from_sequence is inclusive; 0 and 1 both start at the first event
      Given a running job "job-10" that has recorded 5 events
      When a client watches job "job-10" from sequence <from>
      And the job "job-10" records 1 more event and completes
      Then the client receives sequences <expected> and the watch ends OK

      Examples:
        | from | expected |
        | 0    | 1-6      |
        | 1    | 1-6      |
        | 3    | 3-6      |
        | 5    | 5-6      |
        | 6    | 6-6      |
        | 9    | none     |

    Scenario Outline: A watch from past the last event of a running job waits for those events
      Given a running job "job-10f" that has recorded 5 events
      When a client watches job "job-10f" from sequence <from>
      And the job "job-10f" records 4 more events and completes
      Then the client receives sequences <expected> and the watch ends OK

      Examples:
        | from | expected |
        | 6    | 6-9      |
        | 7    | 7-9      |
        | 9    | 9-9      |
        | 50   | none     |

    Scenario: A client that saw N resumes from N+1 and gets exactly the rest
      Given a running job "job-resume" that has recorded 4 events
      When a client watches job "job-resume" from sequence 0
      And the client has received 4 events
      And the client cancels the watch
      And the job "job-resume" records 3 more events and completes
      And a client resumes job "job-resume" from the last sequence it saw plus 1
      Then the client receives sequences 5-7 and the watch ends OK

  @W11
  Rule: W11 A negative from_sequence is INVALID_ARGUMENT

    Scenario: A negative from_sequence is INVALID_ARGUMENT
      Given a running job "job-11" that has recorded 2 events
      When a client watches job "job-11" from sequence -1
      Then the watch is refused with status INVALID_ARGUMENT and details naming the field "from_sequence"

  @W12
  Rule: W12 A terminal job replays from from_sequence, then ends OK

    Scenario Outline: A finished job replays its recorded events from the sequence asked for
      Given a completed job "job-12" that recorded 4 events
      When a client watches job "job-12" from sequence <from>
      Then the client receives sequences <expected> and the watch ends OK
      And every event the client received carries the type, unit, payload and timestamp it was recorded with

      Examples:
        | from | expected |
        | 1    | 1-4      |
        | 3    | 3-4      |
        | 4    | 4-4      |
        | 5    | none     |
        | 50   | none     |

    @volume
    Scenario: A finished job replays every event, far past one read and past any in-memory window
      Given a completed job "job-12big" that recorded 20000 events in batches of 1000
      When clients watch job "job-12big" from sequences 1, 16385 and 19999
      Then they receive sequences 1-20000, 16385-20000 and 19999-20000, and every watch ends OK
      And every event they received carries the type, unit, payload and timestamp it was recorded with

  @W13
  Rule: W13 Replay hands over to live with no gap or duplicate

    Scenario: Replay hands over to live delivery with no gap and no duplicate
      Given a running job "job-13" that has recorded 200 events
      When a client watches job "job-13" from sequence 0
      And the client has received 200 events
      And the job "job-13" records 100 more events, one at a time
      And the job "job-13" starts recording 200 more events, one at a time
      And a second client watches job "job-13" from sequence 0
      And the job "job-13" has recorded all of them and completes
      Then the client receives sequences 1-500 and the watch ends OK
      And the second client receives sequences 1-500 and the watch ends OK

    Scenario: Watchers that join at many points of a fast stream each get every event once, in order
      Given a running job "job-13r" that has recorded 20 events
      When the job "job-13r" starts recording 2000 more events in batches of 1 to 4
      And 180 clients join job "job-13r" while it records, each from up to 12 events back, and take 40 events
      And the job "job-13r" has recorded all of them and completes
      Then every one of those clients receives its events from where it joined, each once, in order

    # In process, the suite records events in the watch's own thread at each
    # point of its hand-over (the seam's checkpoints): before it subscribes,
    # once it has subscribed, once it has read a page of history from storage,
    # once it has read everything and is about to wait for more. The race the
    # scenario above makes likely is made certain here.
    @checkpoints
    Scenario Outline: Events recorded at any point of a new watch's hand-over reach it once, in order
      Given a running job "job-13c" that has recorded 300 events
      And the job "job-13c" will record <count> more events when a new watch of it is at "<point>"
      When a client watches job "job-13c" from sequence <from>
      And the watch has passed "<point>" with those events recorded
      And the client has received <received> events, those recorded at the checkpoint within 2 seconds
      And the job "job-13c" records 5 more events and completes
      Then the client receives sequences <expected> and the watch ends OK

      Examples:
        | point              | count | from | received | expected |
        | before-subscribe   | 1     | 0    | 301      | 1-306    |
        | before-subscribe   | 200   | 0    | 500      | 1-505    |
        | before-subscribe   | 1     | 301  | 1        | 301-306  |
        | after-subscribe    | 1     | 0    | 301      | 1-306    |
        | after-subscribe    | 200   | 0    | 500      | 1-505    |
        | after-subscribe    | 1     | 301  | 1        | 301-306  |
        | after-history-read | 1     | 0    | 301      | 1-306    |
        | after-history-read | 200   | 0    | 500      | 1-505    |
        | caught-up          | 1     | 0    | 301      | 1-306    |
        | caught-up          | 200   | 0    | 500      | 1-505    |
        | caught-up          | 1     | 301  | 1        | 301-306  |

  @W14
  Rule: W14 A watcher gets every event up to the job's last, then OK

    Scenario: A watcher of a running job gets everything up to the last event, then OK
      Given a running job "job-14" that has recorded 0 events
      When a client watches job "job-14" from sequence 0
      And the job "job-14" records 50 more events in batches of 7 and completes
      Then the client receives sequences 1-50 and the watch ends OK

    @volume
    Scenario: A watcher that joins far behind a running job gets every event up to its last, then OK
      Given a running job "job-14big" that has recorded 20000 events in batches of 1000
      When a client watches job "job-14big" from sequence 1
      And the job "job-14big" records 4000 more events in batches of 1000 and completes
      Then the client receives sequences 1-24000 and the watch ends OK

    Scenario: The watchers that remain get each new event promptly after others have gone
      Given a running job "job-14w" that has recorded 1 events
      When 6 clients watch job "job-14w" from sequence 0
      And every one of them has received 1 event
      And clients 0 and 1 cancel their watches, client 2's connection fails, and the daemon has released them
      Then each of the 3 clients left receives each of 5 events recorded one at a time within 2 seconds of its recording
      When the job "job-14w" completes
      Then each of the 3 clients left has received sequences 1-6 and its watch ends OK

  @W15
  Rule: W15 A slow or stalled watcher blocks nothing and costs bounded memory

    @volume
    Scenario: A stalled watcher blocks neither the job nor the other watchers, and later gets everything
      Given a running job "job-15" that has recorded 1 events
      When client "stalled" watches job "job-15" from sequence 0
      And client "live" watches job "job-15" from sequence 0
      And client "stalled" has received at least 1 events
      And the transport of client "stalled" stops accepting messages
      And the job "job-15" records 20000 more events of 200 bytes in batches of 1000 and completes
      Then client "live" receives sequences 1-20001 and its watch ends OK
      And client "stalled" has received at most 2 events
      When the transport of client "stalled" accepts messages again
      Then client "stalled" receives sequences 1-20001 and its watch ends OK

    @volume @daemon_process
    Scenario: Stalled watchers' backlogs do not grow the daemon's memory
      Given a running job "job-15m" that has recorded 15000 events of 1000 bytes in batches of 500
      When the daemon's memory is measured
      And the job "job-15m" records 15000 more events of 1000 bytes in batches of 500
      And the daemon's memory growth is noted as what recording them costs
      And 10 clients watch job "job-15m" from sequence 0 and stop reading
      And the daemon's memory is measured
      And the job "job-15m" records 15000 more events of 1000 bytes in batches of 500
      Then the daemon's memory has grown by less than what recording them costs, plus half of what keeping those events for each stalled client would take

    @volume @daemon_process
    Scenario: Watchers that start far behind read their backlog a page at a time, not all at once
      Given a running job "job-15b" that has recorded 15000 events of 1000 bytes in batches of 500
      When the job "job-15b" records 15000 more events of 1000 bytes in batches of 500
      And the daemon's memory is measured
      And the job "job-15b" records 15000 more events of 1000 bytes in batches of 500
      And the daemon's memory growth is noted as what recording them costs
      And the daemon's memory is measured
      And 10 clients watch job "job-15b" from sequence 1 and stop reading
      Then the daemon's memory has grown by less than what recording them costs, plus half of what keeping those events for each stalled client would take

  @W16
  Rule: W16 Many watchers see the identical sequence

    Scenario: Many watchers of one job each see the identical sequence
      Given a running job "job-16" that has recorded 10 events
      When 20 clients watch job "job-16" from sequence 0
      And the job "job-16" records 300 more events in batches of 3 and completes
      Then every one of the 20 clients receives sequences 1-310, identical in every field, and ends OK

  @W17
  Rule: W17 Events survive a daemon restart unchanged

    @restarts_daemon
    Scenario: Events survive a daemon restart unchanged
      Given a completed job "job-17" that recorded 6 events
      And a client has watched job "job-17" from sequence 1 to the end
      When the daemon crashes and restarts on the same database
      And a second client watches job "job-17" from sequence 1
      Then the second client receives exactly the events the first client received, every field identical
      And every event the second client received carries the type, unit, payload and timestamp it was recorded with

    @restarts_daemon
    Scenario: Payloads survive a restart byte for byte
      Given a running job "job-17p" that has recorded 0 events
      And the job "job-17p" records one event with each of these payloads, and completes:
        | payload            |
        | non-ASCII text     |
        | non-canonical JSON |
        | JSON escapes       |
        | not JSON           |
        | 64 KiB             |
      When the daemon crashes and restarts on the same database
      Then a watch of job "job-17p" from sequence 1 returns those payloads byte for byte

    @restarts_daemon @R6 @R7
    Scenario: Jobs keep their statuses, times, errors and order across a restart
      Given jobs set up through the control service, in this order:
        | job    | status    | error        |
        | job-r5 | completed |              |
        | job-r4 | failed    | unit b broke |
        | job-r3 | cancelled |              |
        | job-r2 | running   |              |
        | job-r1 | pending   |              |
      And what GetJobStatus and ListJobs answer about them is noted
      When the daemon crashes and restarts on the same database
      Then GetJobStatus answers the same status, times and error as before for each job that had ended
      And each job that had not ended is as it was, or has ended with a completed_at no earlier than its started_at
      And ListJobs lists the jobs in the same order as before

    @restarts_daemon
    Scenario: Every event a watcher received before a crash in the middle of a burst is there after it
      Then 3 times over, the daemon killed while a job records events one at a time and a client watches it, every event the client had received is there after the restart, identical

    @restarts_daemon
    Scenario: A running job's history survives a restart
      Given a running job "job-17b" that has recorded 3 events
      And a client has received the first 3 events of job "job-17b"
      When the daemon crashes and restarts on the same database
      And a second client watches job "job-17b" from sequence 1
      Then the second client's first 3 events are exactly those the first client received, every field identical

    @restarts_daemon @reference
    Scenario: A job that was running when the daemon died comes back failed, history intact
      Given a running job "job-17c" that has recorded 3 events
      When the daemon crashes and restarts on the same database
      And a client watches job "job-17c" from sequence 1
      Then the client receives sequences 1-3 and the watch ends OK
      And the job "job-17c" is failed with the error "daemon stopped while the job was running"

  @W18
  Rule: W18 A new watch during shutdown is UNAVAILABLE

    @ends_daemon
    Scenario: A new watch during shutdown is refused UNAVAILABLE
      Given a running job "job-18" that has recorded 2 events
      And the daemon is shutting down, waiting for a running job
      When a client watches job "job-18" from sequence 0
      Then the watch is refused with status UNAVAILABLE and details "daemon is shutting down"
