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

    @fresh_daemon @control
    Scenario: Health counts a pending job as active
      Given a pending job "job-9p" and a running job "job-9r", set up through the control service
      Then Health answers healthy with 2 active jobs and a version

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
    Scenario: Shutdown waiting for jobs stops a job that outlives the timeout by force, and counts it
      When a client starts a job on "waiting"
      And the job's first command is running
      And a client asks the daemon to shut down waiting up to 1 seconds
      Then the call answers success with 1 job stopped
      And the job ends "cancelled"
      And the command "slow" task 1 is no longer running

    @ends_daemon
    Scenario: Shutdown waiting with a timeout of 0 waits (30 s), so a job that ends meanwhile completes
      When a client starts a job on "waiting"
      And the job's first command is running
      And a client asks the daemon to shut down waiting up to 0 seconds
      Then Health answers not healthy
      And the command "slow" task 1 keeps running for half a second
      When the running command is released
      Then the call answers success with 0 jobs stopped
      And the job ends "completed"

    @ends_daemon @daemon_process
    Scenario: After Shutdown has answered, the daemon exits and its socket is gone
      When a client asks the daemon to shut down without waiting
      Then the call answers success with 0 jobs stopped
      And the daemon process exits and its socket is gone

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

    Scenario Outline: A NUL byte in any string field gets a status of the contract
      When a client sends a <rpc> request whose <field> holds a NUL byte
      Then the call answers OK or fails with one of the contract's codes
      And Health still answers

      Examples:
        | rpc          | field          |
        | StartJob     | tasks_dir      |
        | StartJob     | target_branch  |
        | StartJob     | feature_branch |
        | StartJob     | repo_path      |
        | StopJob      | job_id         |
        | GetJobStatus | job_id         |
        | ListJobs     | status_filter  |
        | WatchJob     | job_id         |

    Scenario Outline: Input too large for a later answer is refused when it arrives
      When a client starts a job on "waiting" whose <field> is <megabytes> MB long
      Then the call fails with status INVALID_ARGUMENT and details naming the field "<field>"
      And ListJobs still answers
      And Health still answers

      Examples:
        | field          | megabytes |
        | feature_branch | 3         |
        | target_branch  | 3         |

    Scenario: A task whose title is 5 MB never makes an answer too large
      Given a tasks folder "huge" whose task file "setup/01-step.md" has a title of 5 MB
      When a client starts a job on "huge"
      Then the call fails with status INVALID_ARGUMENT, or every answer about the job it started stays within gRPC's limits
      And ListJobs still answers
      And Health still answers

    @reference
    Scenario: The reference daemon refuses a 5 MB task file when the job starts
      Given a tasks folder "huge" whose task file "setup/01-step.md" has a title of 5 MB
      When a client starts a job on "huge"
      Then the call fails with status INVALID_ARGUMENT and details mentioning "01-step.md"

    @wire
    Scenario Outline: Request bytes that do not decode get INTERNAL or INVALID_ARGUMENT, never UNKNOWN
      When a client sends <service> <rpc> bytes that do not decode: <how>
      Then the call fails with status INTERNAL or INVALID_ARGUMENT
      And Health still answers

      Examples:
        | service       | rpc          | how                        |
        | DaemonService | StartJob     | a string that is not UTF-8 |
        | DaemonService | StartJob     | a truncated message        |
        | DaemonService | StopJob      | a string that is not UTF-8 |
        | DaemonService | StopJob      | a truncated message        |
        | DaemonService | GetJobStatus | a string that is not UTF-8 |
        | DaemonService | GetJobStatus | a truncated message        |
        | DaemonService | ListJobs     | a string that is not UTF-8 |
        | DaemonService | ListJobs     | a truncated message        |
        | DaemonService | WatchJob     | a string that is not UTF-8 |
        | DaemonService | WatchJob     | a truncated message        |
        | DaemonService | Shutdown     | a truncated message        |
        | DaemonService | Health       | a truncated message        |

      @control
      Examples: the conformance control service
        | service            | rpc               | how                        |
        | ConformanceControl | CreateJob         | a string that is not UTF-8 |
        | ConformanceControl | AppendEvents      | a truncated message        |
        | ConformanceControl | FinishJob         | a string that is not UTF-8 |
        | ConformanceControl | ListSubscriptions | a truncated message        |

  @R11
  Rule: R11 After Shutdown has answered, every new call is UNAVAILABLE

    @ends_daemon
    Scenario: Every call after Shutdown has answered is UNAVAILABLE
      Given a job that has completed
      When a client asks the daemon to shut down without waiting
      Then the call answers success with 0 jobs stopped
      When a client calls every RPC of the service
      Then every one of those calls fails with status UNAVAILABLE
