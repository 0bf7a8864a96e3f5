@job_lifecycle
Feature: Starting, stopping, inspecting and listing jobs
  StartJob runs a tasks folder in choo's layout: unit folders with an
  IMPLEMENTATION_PLAN.md and numbered task files, each task naming a
  backpressure command that must pass. The commands here are the suite's
  levers: each notes when it starts and when it ends, and "wait for the
  release" holds until the scenario lets it go. The other RPCs stop a job,
  report its state, and list jobs.

  Background:
    Given the daemon keeps its events in a fresh database
    And a tasks folder "passing" whose units are:
      | unit  | depends_on | commands   |
      | setup |            | true; true |
      | build | setup      | true       |
    And a tasks folder "failing" whose units are:
      | unit  | depends_on | commands          |
      | setup |            | echo boom; exit 3 |
      | build | setup      | true              |
    And a tasks folder "waiting" whose units are:
      | unit | depends_on | commands                   |
      | slow |            | wait for the release; true |

  @R1
  Rule: R1 StartJob validates its request

    Scenario Outline: StartJob names the first required field that is missing
      When a client starts a job with tasks_dir "<tasks_dir>", target_branch "<target_branch>" and repo_path "<repo_path>"
      Then the call fails with status INVALID_ARGUMENT and details "<details>"

      Examples:
        | tasks_dir | target_branch | repo_path | details                   |
        |           |               |           | tasks_dir is required     |
        | passing   |               |           | target_branch is required |
        | passing   | main          |           | repo_path is required     |

    Scenario: StartJob refuses a negative parallelism
      When a client starts a job on "passing" with parallelism -1
      Then the call fails with status INVALID_ARGUMENT and details naming the field "parallelism"

    @reference
    Scenario: The reference daemon refuses a tasks folder it cannot parse, naming the file
      Given a tasks folder "broken" whose task file "setup/01-step.md" has no backpressure command
      When a client starts a job on "broken"
      Then the call fails with status INVALID_ARGUMENT and details mentioning "01-step.md"

  @R3
  Rule: R3 StartJob returns a new job, visible at once

    Scenario: StartJob returns a new job, visible at once
      When a client starts a job on "waiting"
      Then the call answers status "running" and a job id
      And GetJobStatus of that job answers status "running"
      And ListJobs lists that job
      When a client starts another job on "waiting"
      Then the two job ids differ

    Scenario: Many StartJobs at once each get a job of their own
      When 8 clients start a job on "waiting" at once, each on a repository of its own
      Then all 8 answer status "running", with 8 different job ids

  @R4
  Rule: R4 StartJob on a busy feature branch attaches or refuses

    Scenario: StartJob on a busy feature branch attaches to the same work
      When a client starts a job on "waiting" for feature branch "feat/x"
      And a client starts a job on "waiting" for feature branch "feat/x"
      Then the second call answers the first job's id with status "attached"

    Scenario: A busy feature branch of another repository is no reason to attach or refuse
      When a client starts a job on "waiting" for feature branch "feat/x"
      And a client starts a job on "waiting" for feature branch "feat/x" in another repository
      Then the call answers status "running" and a job id
      And the two job ids differ

    Scenario: StartJob on a busy feature branch with other work is refused
      When a client starts a job on "waiting" for feature branch "feat/x"
      And a client starts a job on "waiting" for feature branch "feat/x" with target_branch "release"
      Then the call fails with status FAILED_PRECONDITION and details naming the field "target_branch"

  @R5
  Rule: R5 StopJob refuses what it cannot stop, and stops gracefully or by force

    Scenario Outline: StopJob refuses what it cannot stop
      Given a job that has completed
      When a client stops job "<job>"
      Then the call fails with status <code> and details <details>

      Examples:
        | job           | code                | details                                  |
        |               | INVALID_ARGUMENT    | "job_id is required"                     |
        | no-such-job   | NOT_FOUND           | naming "no-such-job"                     |
        | the completed | FAILED_PRECONDITION | "job already stopped: completed"         |

    Scenario: A graceful stop lets the running command finish and starts nothing new
      When a client starts a job on "waiting"
      And the job's first command is running
      And a client stops the job gracefully, and the running command is released once the stop is under way
      Then the call answers success with message "job stopped gracefully"
      And the job ends "cancelled"
      And the command "slow" task 1 runs to its end
      And the command "slow" task 2 does not start within half a second of task 1's end

    Scenario: A forced stop kills the running command now
      When a client starts a job on "waiting"
      And the job's first command is running
      And a client stops the job by force
      Then the call answers success with message "job force killed"
      And the command "slow" task 1 is no longer running
      And the job ends "cancelled"
      And the command "slow" task 2 never started

  @R6
  Rule: R6 GetJobStatus reports times, errors and units

    Scenario: GetJobStatus reports times, errors and units
      When a client starts a job on "failing"
      Then the job ends "failed"
      And GetJobStatus of that job has a completed_at and an error
      And GetJobStatus of that job lists units "setup" with 1 of 2 tasks and "build" with 0 of 1 tasks

    @reference
    Scenario: The reference daemon's unit statuses: failed, and blocked behind a failure
      When a client starts a job on "failing"
      Then the job ends "failed"
      And GetJobStatus of that job has a completed_at and an error mentioning "setup"
      And GetJobStatus of that job lists units "setup" failed with 1 of 2 tasks and "build" blocked with 0 of 1 tasks

    Scenario: A running job has no completed_at
      When a client starts a job on "waiting"
      Then GetJobStatus of that job has a started_at and no completed_at

    Scenario Outline: GetJobStatus refuses an empty or unknown job id
      When a client asks for the status of job "<job>"
      Then the call fails with status <code> and details <details>

      Examples:
        | job         | code             | details              |
        |             | INVALID_ARGUMENT | "job_id is required" |
        | no-such-job | NOT_FOUND        | naming "no-such-job" |

  @R7
  Rule: R7 ListJobs lists every job or a filtered few, newest first

    Scenario: ListJobs lists every job newest first, and filters by status
      Given a job that has completed
      And a job that has failed
      And a job that is running
      Then ListJobs lists the running, failed and completed jobs in that order
      And ListJobs filtered by "completed" and "failed" lists the failed and completed jobs, not the running one
      And ListJobs filtered by "cancelled" lists none of them

    Scenario: ListJobs refuses an unknown status, naming the valid ones
      When a client lists jobs with status "finished"
      Then the call fails with status INVALID_ARGUMENT and details mentioning each of "pending, running, completed, failed, cancelled"
