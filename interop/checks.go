package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	conformancev1 "choo-interop/gen/choo/conformance/v1"
	apiv1 "choo-interop/gen/choo/v1"
)

// check is one rule of the contract, seen from a grpc-go client.
type check struct {
	id   string
	what string
	run  func(context.Context, *env) error
}

var checks = []check{
	{"W1", "WatchJob without a job id is refused", checkW1},
	{"W2", "WatchJob of an unknown job is NOT_FOUND naming it", checkW2},
	{"W3", "WatchJob streams every event in order, fields intact, then ends OK", checkW3},
	{"W10", "from_sequence is inclusive; 0 and 1 both start at the first event", checkW10},
	{"W12", "a terminal job replays from from_sequence, then ends OK", checkW12},
	{"cancel", "a cancelled watch releases its subscription", checkCancel},
	{"R1", "StartJob checks its required fields in order", checkR1},
	{"R5", "StopJob: errors, graceful and forced stops end the job cancelled", checkR5},
	{"R6", "GetJobStatus: errors, completed_at, error and units", checkR6},
	{"R7", "ListJobs: all jobs newest first, status filters, unknown status refused", checkR7},
}

// events is the feed the W checks record: three events of two units.
func events() []*conformancev1.EventSpec {
	return []*conformancev1.EventSpec{
		{EventType: "unit.started", UnitId: "alpha", PayloadJson: `{"tasks_total":2}`},
		{EventType: "task.started", UnitId: "alpha", PayloadJson: `{"task":1,"title":"Step one","command":"true"}`},
		{EventType: "unit.started", UnitId: "beta", PayloadJson: `{"tasks_total":1,"note":"ünïcode ✓"}`},
	}
}

func checkW1(ctx context.Context, e *env) error {
	w, err := e.watch(ctx, "", 1)
	if err != nil {
		return wantMessage(err, codes.InvalidArgument, "job_id is required")
	}
	defer w.cancel()
	got, err := w.rest()
	if len(got) > 0 {
		return fmt.Errorf("%d events streamed before the error", len(got))
	}
	return wantMessage(err, codes.InvalidArgument, "job_id is required")
}

func checkW2(ctx context.Context, e *env) error {
	const missing = "interop-no-such-job"
	w, err := e.watch(ctx, missing, 1)
	if err != nil {
		return wantStatus(err, codes.NotFound, missing)
	}
	defer w.cancel()
	got, err := w.rest()
	if len(got) > 0 {
		return fmt.Errorf("%d events streamed for an unknown job", len(got))
	}
	return wantStatus(err, codes.NotFound, missing)
}

// sameEvents checks that got are the specs, recorded with the sequences.
func sameEvents(got []*apiv1.JobEvent, specs []*conformancev1.EventSpec, sequences []int32) error {
	if len(got) != len(specs) {
		return fmt.Errorf("got %d events, want %d", len(got), len(specs))
	}
	for i, event := range got {
		spec := specs[i]
		if event.Sequence != sequences[i] || event.EventType != spec.EventType ||
			event.UnitId != spec.UnitId || event.PayloadJson != spec.PayloadJson {
			return fmt.Errorf("event %d is (%d, %q, %q, %s), want (%d, %q, %q, %s)", i+1,
				event.Sequence, event.EventType, event.UnitId, event.PayloadJson,
				sequences[i], spec.EventType, spec.UnitId, spec.PayloadJson)
		}
		if event.Timestamp == nil || (event.Timestamp.Seconds == 0 && event.Timestamp.Nanos == 0) {
			return fmt.Errorf("event %d (sequence %d) has no timestamp", i+1, event.Sequence)
		}
	}
	return nil
}

func checkW3(ctx context.Context, e *env) error {
	specs := events()
	jobID, sequences, err := e.controlJob(ctx, specs[:2]...)
	if err != nil {
		return err
	}
	w, err := e.watch(ctx, jobID, 1)
	if err != nil {
		return err
	}
	defer w.cancel()
	first, err := w.next(2)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	// One more while the stream is open: it arrives live.
	appended, err := e.control.AppendEvents(ctx, &conformancev1.AppendEventsRequest{
		JobId: jobID, Events: specs[2:],
	})
	if err != nil {
		return fmt.Errorf("ConformanceControl.AppendEvents: %s", describe(err))
	}
	live, err := w.next(1)
	if err != nil {
		return fmt.Errorf("live: %w", err)
	}
	if err := sameEvents(append(first, live...), specs, append(sequences, appended.Sequences...)); err != nil {
		return err
	}
	if err := e.finish(ctx, jobID, "completed"); err != nil {
		return err
	}
	rest, err := w.rest()
	if err != nil {
		return fmt.Errorf("after the job completed the stream ended with %s, want OK", describe(err))
	}
	if len(rest) > 0 {
		return fmt.Errorf("%d unexpected events after the last one", len(rest))
	}
	e.logf("job %s: sequences %v, then OK", jobID, append(sequences, appended.Sequences...))
	return nil
}

// firstSequences opens a watch from `from` on a running job and returns the
// sequences of its first n events.
func firstSequences(ctx context.Context, e *env, jobID string, from int32, n int) ([]int32, error) {
	w, err := e.watch(ctx, jobID, from)
	if err != nil {
		return nil, err
	}
	defer w.cancel()
	got, err := w.next(n)
	if err != nil {
		return nil, fmt.Errorf("from %d: %w", from, err)
	}
	var sequences []int32
	for _, event := range got {
		sequences = append(sequences, event.Sequence)
	}
	return sequences, nil
}

func checkW10(ctx context.Context, e *env) error {
	jobID, sequences, err := e.controlJob(ctx, events()...)
	if err != nil {
		return err
	}
	if !slices.Equal(sequences, []int32{1, 2, 3}) {
		return fmt.Errorf("a new job's events got sequences %v, want [1 2 3]", sequences)
	}
	for _, tc := range []struct {
		from int32
		want []int32
	}{{0, []int32{1, 2, 3}}, {1, []int32{1, 2, 3}}, {2, []int32{2, 3}}, {3, []int32{3}}} {
		got, err := firstSequences(ctx, e, jobID, tc.from, len(tc.want))
		if err != nil {
			return err
		}
		if !slices.Equal(got, tc.want) {
			return fmt.Errorf("from_sequence %d gave %v, want %v", tc.from, got, tc.want)
		}
	}
	return e.finish(ctx, jobID, "completed")
}

func checkW12(ctx context.Context, e *env) error {
	jobID, _, err := e.controlJob(ctx, events()...)
	if err != nil {
		return err
	}
	if err := e.finish(ctx, jobID, "failed"); err != nil {
		return err
	}
	for _, tc := range []struct {
		from int32
		want []int32
	}{{1, []int32{1, 2, 3}}, {2, []int32{2, 3}}, {3, []int32{3}}, {4, nil}, {100, nil}} {
		w, err := e.watch(ctx, jobID, tc.from)
		if err != nil {
			return err
		}
		got, err := w.rest()
		w.cancel()
		if err != nil {
			return fmt.Errorf("from %d: the stream ended with %s, want OK", tc.from, describe(err))
		}
		var sequences []int32
		for _, event := range got {
			sequences = append(sequences, event.Sequence)
		}
		if !slices.Equal(sequences, tc.want) {
			return fmt.Errorf("terminal job from_sequence %d gave %v, want %v then OK", tc.from, sequences, tc.want)
		}
	}
	return nil
}

func subscriptions(ctx context.Context, e *env, jobID string) ([]*conformancev1.Subscription, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := e.control.ListSubscriptions(ctx, &conformancev1.ListSubscriptionsRequest{JobId: jobID})
	if err != nil {
		return nil, fmt.Errorf("ConformanceControl.ListSubscriptions: %s", describe(err))
	}
	return resp.Subscriptions, nil
}

func checkCancel(ctx context.Context, e *env) error {
	jobID, _, err := e.controlJob(ctx, events()[:1]...)
	if err != nil {
		return err
	}
	defer e.finish(ctx, jobID, "cancelled")
	w, err := e.watch(ctx, jobID, 1)
	if err != nil {
		return err
	}
	if _, err := w.next(1); err != nil {
		w.cancel()
		return err
	}
	subs, err := subscriptions(ctx, e, jobID)
	if err != nil {
		w.cancel()
		return err
	}
	if len(subs) != 1 || !subs[0].Open || subs[0].FromSequence != 1 {
		w.cancel()
		return fmt.Errorf("while the watch is open the job has subscriptions %v, want one open from 1", subs)
	}
	w.cancel()
	if _, err := w.stream.Recv(); status.Code(err) != codes.Canceled {
		return fmt.Errorf("after cancel the stream gave %s, want Canceled", describe(err))
	}
	return waitFor(ctx, "the cancelled watch's subscription to be released", func() (bool, error) {
		subs, err := subscriptions(ctx, e, jobID)
		if err != nil {
			return false, err
		}
		return len(subs) == 1 && !subs[0].Open, nil
	})
}

func checkR1(ctx context.Context, e *env) error {
	folder, err := e.tasksFolder(unit{id: "u", commands: []string{"true"}})
	if err != nil {
		return err
	}
	for _, tc := range []struct {
		req  *apiv1.StartJobRequest
		want string
	}{
		{&apiv1.StartJobRequest{Parallelism: 1}, "tasks_dir is required"},
		{&apiv1.StartJobRequest{TargetBranch: "main", RepoPath: e.work}, "tasks_dir is required"},
		{&apiv1.StartJobRequest{TasksDir: folder, RepoPath: e.work}, "target_branch is required"},
		{&apiv1.StartJobRequest{TasksDir: folder, TargetBranch: "main"}, "repo_path is required"},
	} {
		cctx, cancel := call(ctx)
		_, err := e.daemon.StartJob(cctx, tc.req)
		cancel()
		if err := wantMessage(err, codes.InvalidArgument, tc.want); err != nil {
			return fmt.Errorf("StartJob{%v}: %w", tc.req, err)
		}
	}
	cctx, cancel := call(ctx)
	defer cancel()
	_, err = e.daemon.StartJob(cctx, &apiv1.StartJobRequest{
		TasksDir: folder, TargetBranch: "main", RepoPath: e.work, Parallelism: -1,
	})
	if err := wantStatus(err, codes.InvalidArgument); err != nil {
		return fmt.Errorf("StartJob with parallelism -1: %w", err)
	}
	return nil
}

func stopJob(ctx context.Context, e *env, jobID string, force bool) (*apiv1.StopJobResponse, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	return e.daemon.StopJob(ctx, &apiv1.StopJobRequest{JobId: jobID, Force: force})
}

// ended waits for the job to end and returns its status.
func ended(ctx context.Context, e *env, jobID string) (*apiv1.GetJobStatusResponse, error) {
	if _, err := e.allEvents(ctx, jobID); err != nil {
		return nil, err
	}
	return e.status(ctx, jobID)
}

func checkR5(ctx context.Context, e *env) error {
	if _, err := stopJob(ctx, e, "", false); wantStatus(err, codes.InvalidArgument) != nil {
		return fmt.Errorf("StopJob without a job id: %w", wantStatus(err, codes.InvalidArgument))
	}
	if _, err := stopJob(ctx, e, "interop-no-such-job", false); wantStatus(err, codes.NotFound) != nil {
		return fmt.Errorf("StopJob of an unknown job: %w", wantStatus(err, codes.NotFound))
	}

	// Graceful: the running command may finish, nothing new starts.
	graceful, err := e.startJob(ctx, unit{id: "g", commands: []string{e.gate("r5-graceful"), "true"}})
	if err != nil {
		return err
	}
	if err := e.waitStarted(ctx, "r5-graceful"); err != nil {
		return err
	}
	resp, err := stopJob(ctx, e, graceful, false)
	if err != nil {
		return fmt.Errorf("StopJob(force=false) of a running job: %s", describe(err))
	}
	if !resp.Success || resp.Message != "job stopped gracefully" {
		return fmt.Errorf("StopJob(force=false) answered %v, want success \"job stopped gracefully\"", resp)
	}
	e.release("r5-graceful")
	st, err := ended(ctx, e, graceful)
	if err != nil {
		return err
	}
	if st.Status != "cancelled" {
		return fmt.Errorf("a gracefully stopped job ended %q, want cancelled", st.Status)
	}
	if len(st.Units) != 1 || st.Units[0].TasksComplete > 1 {
		return fmt.Errorf("after a graceful stop the units are %v: the second task must not run", st.Units)
	}

	// Forced: the running command is killed now (its gate is never released).
	forced, err := e.startJob(ctx, unit{id: "f", commands: []string{e.gate("r5-forced")}})
	if err != nil {
		return err
	}
	if err := e.waitStarted(ctx, "r5-forced"); err != nil {
		return err
	}
	resp, err = stopJob(ctx, e, forced, true)
	if err != nil {
		return fmt.Errorf("StopJob(force=true) of a running job: %s", describe(err))
	}
	if !resp.Success || resp.Message != "job force killed" {
		return fmt.Errorf("StopJob(force=true) answered %v, want success \"job force killed\"", resp)
	}
	if st, err = ended(ctx, e, forced); err != nil {
		return err
	}
	if st.Status != "cancelled" {
		return fmt.Errorf("a force-stopped job ended %q, want cancelled", st.Status)
	}
	_, err = stopJob(ctx, e, forced, false)
	if err := wantMessage(err, codes.FailedPrecondition, "job already stopped: cancelled"); err != nil {
		return fmt.Errorf("StopJob of a stopped job: %w", err)
	}
	return nil
}

func checkR6(ctx context.Context, e *env) error {
	for _, tc := range []struct {
		id   string
		code codes.Code
	}{{"", codes.InvalidArgument}, {"interop-no-such-job", codes.NotFound}} {
		cctx, cancel := call(ctx)
		_, err := e.daemon.GetJobStatus(cctx, &apiv1.GetJobStatusRequest{JobId: tc.id})
		cancel()
		if err := wantStatus(err, tc.code); err != nil {
			return fmt.Errorf("GetJobStatus(%q): %w", tc.id, err)
		}
	}

	jobID, err := e.startJob(ctx,
		unit{id: "first", commands: []string{"true", e.gate("r6")}},
		unit{id: "second", dependsOn: []string{"first"}, commands: []string{"true"}})
	if err != nil {
		return err
	}
	if err := e.waitStarted(ctx, "r6"); err != nil {
		return err
	}
	st, err := e.status(ctx, jobID)
	if err != nil {
		return err
	}
	if st.JobId != jobID || st.Status != "running" || st.CompletedAt != nil || st.Error != "" || st.StartedAt == nil {
		return fmt.Errorf("a running job's status is %v, want running, started_at set, no completed_at or error", st)
	}
	if got := unitCounts(st.Units); got != "first 1/2, second 0/1" {
		return fmt.Errorf("a running job's units are %q, want \"first 1/2, second 0/1\"", got)
	}
	e.release("r6")
	if st, err = ended(ctx, e, jobID); err != nil {
		return err
	}
	if st.Status != "completed" || st.CompletedAt == nil || st.Error != "" {
		return fmt.Errorf("a completed job's status is %v, want completed with completed_at and no error", st)
	}
	if got := unitCounts(st.Units); got != "first 2/2, second 1/1" {
		return fmt.Errorf("a completed job's units are %q, want \"first 2/2, second 1/1\"", got)
	}

	failing, err := e.startJob(ctx, unit{id: "bad", commands: []string{"echo boom; exit 3"}})
	if err != nil {
		return err
	}
	if st, err = ended(ctx, e, failing); err != nil {
		return err
	}
	if st.Status != "failed" || st.Error == "" || st.CompletedAt == nil {
		return fmt.Errorf("a failed job's status is %v, want failed with an error and completed_at", st)
	}
	return nil
}

// unitCounts is "unit done/total, ..." in the order GetJobStatus lists them.
func unitCounts(units []*apiv1.UnitStatus) string {
	var rows []string
	for _, u := range units {
		rows = append(rows, fmt.Sprintf("%s %d/%d", u.UnitId, u.TasksComplete, u.TasksTotal))
	}
	return strings.Join(rows, ", ")
}

func listJobs(ctx context.Context, e *env, filter ...string) ([]*apiv1.JobSummary, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := e.daemon.ListJobs(ctx, &apiv1.ListJobsRequest{StatusFilter: filter})
	if err != nil {
		return nil, err
	}
	return resp.Jobs, nil
}

// ours returns the ids of the listed jobs that are among ids, in list order.
func ours(jobs []*apiv1.JobSummary, ids ...string) []string {
	var got []string
	for _, job := range jobs {
		if slices.Contains(ids, job.JobId) {
			got = append(got, job.JobId)
		}
	}
	return got
}

func checkR7(ctx context.Context, e *env) error {
	done, err := e.startJob(ctx, unit{id: "ok", commands: []string{"true"}})
	if err != nil {
		return err
	}
	if _, err := ended(ctx, e, done); err != nil {
		return err
	}
	failed, err := e.startJob(ctx, unit{id: "bad", commands: []string{"exit 1"}})
	if err != nil {
		return err
	}
	if _, err := ended(ctx, e, failed); err != nil {
		return err
	}
	running, err := e.startJob(ctx, unit{id: "wait", commands: []string{e.gate("r7")}})
	if err != nil {
		return err
	}
	defer func() {
		e.release("r7")
		ended(ctx, e, running)
	}()

	all, err := listJobs(ctx, e)
	if err != nil {
		return fmt.Errorf("ListJobs(): %s", describe(err))
	}
	if got, want := ours(all, done, failed, running), []string{running, failed, done}; !slices.Equal(got, want) {
		return fmt.Errorf("ListJobs() lists this check's jobs as %v, want every one, newest first: %v", got, want)
	}
	for _, tc := range []struct {
		filter []string
		want   []string
	}{
		{[]string{"running"}, []string{running}},
		{[]string{"completed", "failed"}, []string{failed, done}},
		{[]string{"cancelled", "pending"}, nil},
	} {
		jobs, err := listJobs(ctx, e, tc.filter...)
		if err != nil {
			return fmt.Errorf("ListJobs(%v): %s", tc.filter, describe(err))
		}
		for _, job := range jobs {
			if !slices.Contains(tc.filter, job.Status) {
				return fmt.Errorf("ListJobs(%v) lists job %s in status %q", tc.filter, job.JobId, job.Status)
			}
		}
		if got := ours(jobs, done, failed, running); !slices.Equal(got, tc.want) {
			return fmt.Errorf("ListJobs(%v) lists this check's jobs as %v, want %v", tc.filter, got, tc.want)
		}
	}
	_, err = listJobs(ctx, e, "running", "bogus")
	if err := wantStatus(err, codes.InvalidArgument, "bogus", "pending", "running", "completed", "failed", "cancelled"); err != nil {
		return fmt.Errorf("ListJobs with an unknown status: %w", err)
	}
	return nil
}
