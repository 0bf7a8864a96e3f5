@job_lifecycle
Feature: Starting, stopping, inspecting and listing jobs
  StartJob runs a tasks folder in choo's layout: unit folders with an
  IMPLEMENTATION_PLAN.md and numbered task files, each task naming a
  backpressure command that must pass. The other RPCs stop a job, report its
  state, and list jobs.

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
      | unit | depends_on | commands                     |
      | slow |            | wait for the release; true   |

  @R1
  Scenario Outline: StartJob names the first required field that is missing
    When a client starts a job with tasks_dir "<tasks_dir>", target_branch "<target_branch>" and repo_path "<repo_path>"
    Then the call fails with status INVALID_ARGUMENT and details "<details>"

    Examples:
      | tasks_dir | target_branch | repo_path | details                   |
      |           |               |           | tasks_dir is required     |
      | passing   |               |           | target_branch is required |
      | passing   | main          |           | repo_path is required     |

  @R1
  Scenario: StartJob refuses a negative parallelism
    When a client starts a job on "passing" with parallelism -1
    Then the call fails with status INVALID_ARGUMENT and details mentioning "parallelism"

  @R1
  Scenario: StartJob refuses a tasks folder it cannot parse, naming the file
    Given a tasks folder "broken" whose task file "setup/01-first.md" has no backpressure command
    When a client starts a job on "broken"
    Then the call fails with status INVALID_ARGUMENT and details mentioning "01-first.md"

  @R3
  Scenario: StartJob returns a new job, visible at once
    When a client starts a job on "waiting"
    Then the call answers status "running" and a job id
    And GetJobStatus of that job answers status "running"
    And ListJobs lists that job
    When a client starts another job on "waiting"
    Then the two job ids differ

  @R4
  Scenario: StartJob on a busy feature branch attaches to the same work
    When a client starts a job on "waiting" for feature branch "feat/x"
    And a client starts a job on "waiting" for feature branch "feat/x"
    Then the second call answers the first job's id with status "attached"

  @R4
  Scenario: StartJob on a busy feature branch with other work is refused
    When a client starts a job on "waiting" for feature branch "feat/x"
    And a client starts a job on "waiting" for feature branch "feat/x" with target_branch "release"
    Then the call fails with status FAILED_PRECONDITION and details mentioning "target_branch"

  @R5
  Scenario Outline: StopJob refuses what it cannot stop
    Given a job that has completed
    When a client stops job "<job>"
    Then the call fails with status <code> and details "<details>"

    Examples:
      | job           | code                | details                           |
      |               | INVALID_ARGUMENT    | job_id is required                |
      | no-such-job   | NOT_FOUND           | job not found: no-such-job        |
      | the completed | FAILED_PRECONDITION | job already stopped: completed    |

  @R5
  Scenario: A graceful stop lets the running command finish and starts nothing new
    When a client starts a job on "waiting"
    And the job's first command is running
    And a client stops the job gracefully
    Then the call answers success with message "job stopped gracefully"
    When the running command is released
    Then the job ends "cancelled"
    And the job recorded no "task.started" event for task 2

  @R5
  Scenario: A forced stop kills the running command now
    When a client starts a job on "waiting"
    And the job's first command is running
    And a client stops the job by force
    Then the call answers success with message "job force killed"
    And the job ends "cancelled"

  @R6
  Scenario: GetJobStatus reports times, errors and units
    When a client starts a job on "failing"
    Then the job ends "failed"
    And GetJobStatus of that job has a completed_at and an error mentioning "setup"
    And GetJobStatus of that job lists units "setup" failed with 1 of 2 tasks and "build" blocked with 0 of 1 tasks

  @R6
  Scenario: A running job has no completed_at
    When a client starts a job on "waiting"
    Then GetJobStatus of that job has a started_at and no completed_at

  @R6
  Scenario Outline: GetJobStatus refuses an empty or unknown job id
    When a client asks for the status of job "<job>"
    Then the call fails with status <code> and details "<details>"

    Examples:
      | job         | code             | details                    |
      |             | INVALID_ARGUMENT | job_id is required         |
      | no-such-job | NOT_FOUND        | job not found: no-such-job |

  @R7
  Scenario: ListJobs lists every job newest first, and filters by status
    Given a job that has completed
    And a job that has failed
    And a job that is running
    Then ListJobs lists the running, failed and completed jobs in that order
    And ListJobs filtered by "completed" and "failed" lists the failed and completed jobs, not the running one
    And ListJobs filtered by "cancelled" lists none of them

  @R7
  Scenario: ListJobs refuses an unknown status, naming the valid ones
    When a client lists jobs with status "finished"
    Then the call fails with status INVALID_ARGUMENT and details mentioning "pending, running, completed, failed, cancelled"
