@black_box
Feature: WatchJob, checked through DaemonService alone
  The black-box profile checks a daemon that serves only choo.v1.DaemonService,
  as an unmodified implementation does. Every job is started with StartJob on
  a tasks folder the suite writes in choo's layout; its commands are the
  suite's levers ("wait for" a command holds until the scenario releases it),
  so the scenario decides when a job makes progress and when it ends.

  Nothing here assumes what the specification leaves open: which events a
  job records, how many, or what their payloads hold. What is checked is
  what every implementation owes: numbering from 1 with no gap, replays
  identical to what was delivered live, from_sequence inclusive, the ends of
  streams and their codes. Where a rule is about the subscription itself
  (W4, W5, W7), what a client can see of it is checked here; the rest needs
  the control service.

  Background:
    Given a tasks folder "three steps" whose units are:
      | unit | depends_on | commands                                      |
      | only |            | wait for "a"; wait for "b"; wait for "c"      |
    And a tasks folder "quick" whose units are:
      | unit  | depends_on | commands               |
      | first |            | true; echo hello       |
      | then  | first      | echo world             |

  @W3 @W14
  Rule: W3 Every event reaches the client in order, intact; the stream ends OK

    Scenario: A watcher of a running job gets every event, in order, up to the job's last, then OK
      When a client starts a job on "three steps"
      And a client watches that job from sequence 1
      And the commands "a", "b" and "c" are released one after another
      Then the job ends "completed"
      And the watch ends OK with sequences from 1 to the job's last, contiguous
      And a replay of the job from 1 is exactly what the watch received, every field identical

  @W4 @client_side
  Rule: W4 from_sequence reaches the subscription unchanged

    Scenario: A watch from a sequence gets the job's events from that sequence on
      Given a job on "quick" that has completed, watched from 1 to its end
      When a client watches that job from sequence 2
      Then the client receives the sequences 2 to the last of that first watch, and the watch ends OK

  @W5 @client_side
  Rule: W5 A client that cancels is released promptly

    Scenario: A client that cancels ends its watch at once; the daemon serves the others
      When a client starts a job on "three steps"
      And client "leaving" watches that job from sequence 1
      And client "staying" watches that job from sequence 1
      And the command "a" is running
      And client "leaving" cancels its watch
      Then the watch of client "leaving" ends CANCELLED within 1 second
      When the commands "a", "b" and "c" are released one after another
      Then the job ends "completed"
      And client "staying" receives every event of the job, and its watch ends OK
      And Health still answers

  @W7 @client_side
  Rule: W7 A failed delivery ends that watch only

    Scenario: A client that drops its connection mid-stream does not disturb the others
      When a client starts a job on "three steps"
      And client "dropper" watches that job from sequence 1
      And client "steady" watches that job from sequence 1
      And the command "a" is running
      And the transport of client "dropper" stops accepting messages
      And the commands "a" and "b" are released one after another
      And the connection of client "dropper" fails while events are pending
      And the command "c" is released
      Then the job ends "completed"
      And client "steady" receives every event of the job, and its watch ends OK

  @W6
  Rule: W6 Shutdown ends open watches UNAVAILABLE

    @ends_daemon
    Scenario: Open watches end UNAVAILABLE when the daemon starts shutting down
      When a client starts a job on "three steps"
      And a client watches that job from sequence 0
      And the command "a" is running
      And a client asks the daemon to shut down waiting up to 60 seconds
      Then within 1 second the watch ends with status UNAVAILABLE and details "daemon is shutting down"

  @W8
  Rule: W8 A terminal job watched from 0 ends OK at once

    Scenario: A finished job watched from 0 ends OK at once, with no events
      Given a job on "quick" that has completed, watched from 1 to its end
      When a client watches that job from sequence 0
      Then the watch ends with status OK
      And the client received no events

  @W9
  Rule: W9 Sequences start at 1, are contiguous, and are never renumbered

    Scenario: A replay from any sequence returns exactly what was delivered live
      When a client starts a job on "three steps"
      And a client watches that job from sequence 1
      And the commands "a", "b" and "c" are released one after another
      Then the job ends "completed"
      And the watch ends OK with sequences from 1 to the job's last, contiguous
      And replays from 2, from the middle and from the last sequence return exactly what the watch received from there, every field identical

    Scenario: Units that run side by side still number the job's events 1, 2, 3, ... once each
      Given a tasks folder "side by side" with 6 independent units of 15 steps that each print a line
      When a client starts a job on "side by side" with parallelism 6 behind a gate
      And a client watches that job from sequence 1
      And the gate is released
      Then the job ends "completed"
      And the watch ends OK with sequences from 1 to the job's last, contiguous
      And replays from 2, from the middle and from the last sequence return exactly what the watch received from there, every field identical

  @W10 @W12
  Rule: W10 from_sequence is inclusive

    Scenario Outline: from_sequence is inclusive, on a finished job
      Given a job on "quick" that has completed, watched from 1 to its end
      When a client watches that job from sequence <from>
      Then the client receives the sequences <expected> of that first watch, and the watch ends OK

      Examples:
        | from         | expected      |
        | 1            | 1 to the last |
        | 2            | 2 to the last |
        | the last     | the last      |
        | the last + 1 | none          |

    Scenario: A client that saw N resumes from N+1 and gets exactly the rest
      When a client starts a job on "three steps"
      And a client watches that job from sequence 0
      And the command "a" is running
      And the client has received at least 1 event
      And the client cancels the watch
      And the commands "a", "b" and "c" are released one after another
      And the job ends "completed"
      And a client resumes that job from the last sequence it saw plus 1
      Then the resumed watch receives exactly the rest of the job's events, and ends OK

  @W11
  Rule: W11 A negative from_sequence is INVALID_ARGUMENT

    Scenario: A negative from_sequence is INVALID_ARGUMENT
      Given a job on "quick" that has completed, watched from 1 to its end
      When a client watches that job from sequence -1
      Then the watch is refused with status INVALID_ARGUMENT and details naming the field "from_sequence"

  @W13
  Rule: W13 Replay hands over to live with no gap or duplicate

    Scenario: Watchers that join while the job records events each get every event once, in order
      Given a tasks folder "thirty steps" with one unit of 30 steps that each wait for their release
      When a client starts a job on "thirty steps"
      And the steps are released one after another, 2 clients joining from 1 after each
      Then the job ends "completed"
      And every client that joined receives every event of the job once, in order, and ends OK

  @W15
  Rule: W15 A slow or stalled watcher blocks nothing and costs bounded memory

    @volume
    Scenario: A stalled watcher blocks neither the job nor the other watchers
      Given a tasks folder "busy" with 6 units of 99 steps that each print a line
      When a client starts a job on "busy" behind a gate
      And client "stalled" watches that job from sequence 1
      And client "live" watches that job from sequence 1
      And the transport of client "stalled" stops accepting messages
      And the gate is released
      Then the job ends "completed"
      And client "live" receives every event of the job, and its watch ends OK
      And client "stalled" has received fewer events than client "live"
      When the transport of client "stalled" accepts messages again
      Then client "stalled" receives every event of the job, and its watch ends OK

  @W16
  Rule: W16 Many watchers see the identical sequence

    Scenario: Many watchers of one job each see the identical sequence
      When a client starts a job on "three steps"
      And 20 clients watch that job from sequence 1
      And the commands "a", "b" and "c" are released one after another
      Then the job ends "completed"
      And every one of the 20 clients receives every event of the job, identical in every field, and ends OK

  @W17
  Rule: W17 Events survive a daemon restart unchanged

    @restarts_daemon
    Scenario: Events survive a daemon restart unchanged
      Given a job on "quick" that has completed, watched from 1 to its end
      When the daemon crashes and restarts on the same database
      And a second client watches that job from sequence 1
      Then the second client receives exactly the events the first client received, every field identical

  @W18
  Rule: W18 A new watch during shutdown is UNAVAILABLE

    @ends_daemon
    Scenario: A new watch during shutdown is refused UNAVAILABLE
      Given a job on "quick" that has completed, watched from 1 to its end
      And the daemon is shutting down, waiting for a running job
      When a client watches that job from sequence 1
      Then the watch is refused with status UNAVAILABLE and details "daemon is shutting down"
