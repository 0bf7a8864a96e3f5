@scale @control @daemon_capacity
Feature: The daemon stays responsive with many open watches
  Open watches must not use up what the other RPCs need: a daemon that holds
  a worker thread per watch stops answering once the watches outnumber its
  workers. Nothing here is timed beyond the usual deadlines.

  Background:
    Given the daemon keeps its events in a fresh database
    And a tasks folder "passing" whose units are:
      | unit  | depends_on | commands |
      | setup |            | true     |

  @W16
  Rule: W16 Many watchers see the identical sequence

    @W15
    Scenario: With 1000 open watches of one job, the other RPCs answer and every watcher gets every event
      Given a running job "job-many" that has recorded 5 events
      When 1000 clients watch job "job-many" from sequence 0
      And every one of them has received 5 events
      Then Health answers healthy
      And GetJobStatus of job "job-many" answers "running"
      And StartJob on "passing" answers "running"
      When the job "job-many" records 20 more events in batches of 4 and completes
      Then every one of the 1000 clients receives sequences 1-25, identical in every field, and ends OK
