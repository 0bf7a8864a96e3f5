@daemon_lifecycle
Feature: The daemon's health and shutdown
  Health tells whether the daemon takes work; Shutdown stops it, letting jobs
  finish when asked to. Every request, however odd, gets a status of the
  contract.

  Background:
    Given the daemon keeps its events in a fresh database
    And a tasks folder "waiting" whose units are:
      | unit | depends_on | commands                   |
      | slow |            | wait for the release; true |

  @R9
  Rule: R9 Health reports health, active jobs and a version

    @fresh_daemon
    Scenario: Health reports the active jobs and a version
      Given a job that has completed
      When a client starts a job on "waiting"
      Then Health answers healthy with 1 active job and a version

  @R2
  Rule: R2 StartJob during shutdown is UNAVAILABLE

    @ends_daemon
    Scenario: StartJob during shutdown is UNAVAILABLE
      Given the daemon is shutting down, waiting for a running job
      When a client starts a job on "waiting"
      Then the call fails with status UNAVAILABLE and details "daemon is shutting down"
      And Health answers not healthy

  @R8
  Rule: R8 Shutdown waits or forces, and happens once

    @ends_daemon
    Scenario: Shutdown without waiting stops running jobs by force at once
      When a client starts a job on "waiting"
      And the job's first command is running
      And a client asks the daemon to shut down without waiting
      Then the call answers success with 1 job stopped
      And the job ends "cancelled"

    @ends_daemon
    Scenario: Shutdown waiting for jobs lets them finish
      When a client starts a job on "waiting"
      And the job's first command is running
      And a client asks the daemon to shut down waiting up to 30 seconds
      And the running command is released
      Then the call answers success with 0 jobs stopped
      And the job ends "completed"

    @ends_daemon
    Scenario: A second Shutdown is refused
      Given the daemon is shutting down, waiting for a running job
      When a client asks the daemon to shut down without waiting
      Then the call fails with status FAILED_PRECONDITION and details "shutdown already in progress"

  @R10
  Rule: R10 Every error is a contract status, within gRPC's limits

    Scenario Outline: Odd requests get a status of the contract, never UNKNOWN or INTERNAL
      When a client calls <rpc> with odd values "<value>"
      Then the call answers OK or fails with one of the contract's codes
      And Health still answers

      Examples:
        | rpc          | value                     |
        | StartJob     | /no/such/dir              |
        | StartJob     | ../../../../etc           |
        | StartJob     | ✓ ünïcödé \u0000 nul      |
        | StopJob      | ' OR 1=1 --               |
        | GetJobStatus | %s%s%s%n                  |
        | ListJobs     | RUNNING                   |
        | WatchJob     | {"job": 1}                |

  @R11
  Rule: R11 After Shutdown has answered, every new call is UNAVAILABLE

    @ends_daemon
    Scenario: Every call after Shutdown has answered is UNAVAILABLE
      Given a job that has completed
      When a client asks the daemon to shut down without waiting
      Then the call answers success with 0 jobs stopped
      When a client calls every RPC of the service
      Then every one of those calls fails with status UNAVAILABLE
