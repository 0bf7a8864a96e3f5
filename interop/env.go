package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	conformancev1 "choo-interop/gen/choo/conformance/v1"
	apiv1 "choo-interop/gen/choo/v1"
)

// env is what every check works with: the two services and a directory for
// task folders and gate files.
type env struct {
	daemon  apiv1.DaemonServiceClient
	control conformancev1.ConformanceControlClient
	work    string
	verbose bool
	gates   []string
	folders int
}

func (e *env) logf(format string, args ...any) {
	if e.verbose {
		fmt.Printf("       "+format+"\n", args...)
	}
}

// cleanUp releases every gate, then removes the work directory. A gate's
// command also ends when the directory is gone, so none is left waiting.
func (e *env) cleanUp() {
	for _, gate := range e.gates {
		e.release(gate)
	}
	os.RemoveAll(e.work)
}

// -- task folders in choo's layout -------------------------------------------

// unit is one unit folder: its id, the units it depends on, and one
// backpressure command per task (each task depends on the one before).
type unit struct {
	id        string
	dependsOn []string
	commands  []string
}

// tasksFolder writes the units into a new task folder and returns its path.
func (e *env) tasksFolder(units ...unit) (string, error) {
	e.folders++
	root := filepath.Join(e.work, fmt.Sprintf("tasks-%d", e.folders))
	for _, u := range units {
		dir := filepath.Join(root, u.id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		deps, _ := json.Marshal(append([]string{}, u.dependsOn...))
		plan := fmt.Sprintf("---\nunit: %s\ndepends_on: %s\n---\n\n# %s\n", u.id, deps, u.id)
		if err := os.WriteFile(filepath.Join(dir, "IMPLEMENTATION_PLAN.md"), []byte(plan), 0o644); err != nil {
			return "", err
		}
		for i, command := range u.commands {
			n := i + 1
			after := "[]"
			if n > 1 {
				after = fmt.Sprintf("[%d]", n-1)
			}
			// A JSON string is a valid YAML double-quoted scalar.
			quoted, _ := json.Marshal(command)
			task := fmt.Sprintf("---\ntask: %d\nbackpressure: %s\ndepends_on: %s\n---\n\n# Step %d of %s\n",
				n, quoted, after, n, u.id)
			name := filepath.Join(dir, fmt.Sprintf("%02d-step%d.md", n, n))
			if err := os.WriteFile(name, []byte(task), 0o644); err != nil {
				return "", err
			}
		}
	}
	return root, nil
}

// gate returns a command that marks itself started, then waits until the
// checks release it (or the work directory is removed).
func (e *env) gate(name string) string {
	e.gates = append(e.gates, name)
	started := filepath.Join(e.work, name+".started")
	release := filepath.Join(e.work, name+".release")
	return fmt.Sprintf("touch %s; while [ ! -e %s ] && [ -d %s ]; do sleep 0.02; done",
		started, release, e.work)
}

func (e *env) release(name string) {
	if f, err := os.Create(filepath.Join(e.work, name+".release")); err == nil {
		f.Close()
	}
}

// waitStarted waits until the gate's command has started.
func (e *env) waitStarted(ctx context.Context, name string) error {
	path := filepath.Join(e.work, name+".started")
	return waitFor(ctx, "the command of gate "+name+" to start", func() (bool, error) {
		_, err := os.Stat(path)
		return err == nil, nil
	})
}

// waitFor polls condition until it holds, fails, or the deadline passes.
func waitFor(ctx context.Context, what string, condition func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := condition()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// -- calls -----------------------------------------------------------------------

func call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

// startJob starts a job from a new task folder of the units, in the work
// directory, and returns its id.
func (e *env) startJob(ctx context.Context, units ...unit) (string, error) {
	folder, err := e.tasksFolder(units...)
	if err != nil {
		return "", err
	}
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := e.daemon.StartJob(ctx, &apiv1.StartJobRequest{
		TasksDir: folder, TargetBranch: "main", RepoPath: e.work,
	})
	if err != nil {
		return "", fmt.Errorf("StartJob: %s", describe(err))
	}
	if resp.Status != "running" {
		return "", fmt.Errorf("StartJob: status %q, want \"running\"", resp.Status)
	}
	e.logf("started job %s", resp.JobId)
	return resp.JobId, nil
}

func (e *env) status(ctx context.Context, jobID string) (*apiv1.GetJobStatusResponse, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	resp, err := e.daemon.GetJobStatus(ctx, &apiv1.GetJobStatusRequest{JobId: jobID})
	if err != nil {
		return nil, fmt.Errorf("GetJobStatus(%s): %s", jobID, describe(err))
	}
	return resp, nil
}

// controlJob creates a running job through the control service and records
// the events on it; it returns the job id and the events' sequences.
func (e *env) controlJob(ctx context.Context, events ...*conformancev1.EventSpec) (string, []int32, error) {
	ctx, cancel := call(ctx)
	defer cancel()
	created, err := e.control.CreateJob(ctx, &conformancev1.CreateJobRequest{Status: "running"})
	if err != nil {
		return "", nil, fmt.Errorf("ConformanceControl.CreateJob: %s", describe(err))
	}
	if len(events) == 0 {
		return created.JobId, nil, nil
	}
	appended, err := e.control.AppendEvents(ctx, &conformancev1.AppendEventsRequest{
		JobId: created.JobId, Events: events,
	})
	if err != nil {
		return "", nil, fmt.Errorf("ConformanceControl.AppendEvents: %s", describe(err))
	}
	return created.JobId, appended.Sequences, nil
}

func (e *env) finish(ctx context.Context, jobID, status string) error {
	ctx, cancel := call(ctx)
	defer cancel()
	_, err := e.control.FinishJob(ctx, &conformancev1.FinishJobRequest{JobId: jobID, Status: status})
	if err != nil {
		return fmt.Errorf("ConformanceControl.FinishJob: %s", describe(err))
	}
	return nil
}

// watch is one open WatchJob stream.
type watch struct {
	stream apiv1.DaemonService_WatchJobClient
	cancel context.CancelFunc
}

func (e *env) watch(ctx context.Context, jobID string, from int32) (*watch, error) {
	ctx, cancel := call(ctx)
	stream, err := e.daemon.WatchJob(ctx, &apiv1.WatchJobRequest{JobId: jobID, FromSequence: from})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("WatchJob: %s", describe(err))
	}
	return &watch{stream: stream, cancel: cancel}, nil
}

// next receives n events.
func (w *watch) next(n int) ([]*apiv1.JobEvent, error) {
	var events []*apiv1.JobEvent
	for len(events) < n {
		event, err := w.stream.Recv()
		if err != nil {
			return events, fmt.Errorf("after %d of %d events: %s", len(events), n, describe(err))
		}
		events = append(events, event)
	}
	return events, nil
}

// rest receives events until the stream ends and returns them with the
// stream's end: nil for OK.
func (w *watch) rest() ([]*apiv1.JobEvent, error) {
	var events []*apiv1.JobEvent
	for {
		event, err := w.stream.Recv()
		if errors.Is(err, io.EOF) {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, event)
	}
}

// allEvents watches the job from 1 until its stream ends OK: returns once the
// job is terminal (W14).
func (e *env) allEvents(ctx context.Context, jobID string) ([]*apiv1.JobEvent, error) {
	w, err := e.watch(ctx, jobID, 1)
	if err != nil {
		return nil, err
	}
	defer w.cancel()
	events, err := w.rest()
	if err != nil {
		return events, fmt.Errorf("WatchJob(%s, 1) ended with %s after %d events", jobID, describe(err), len(events))
	}
	return events, nil
}

// -- statuses ----------------------------------------------------------------------

// describe names a gRPC error's code and message.
func describe(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s %q", s.Code(), s.Message())
	}
	return err.Error()
}

// wantStatus checks that err is a gRPC status with the code, whose message
// contains every part.
func wantStatus(err error, code codes.Code, parts ...string) error {
	if err == nil {
		return fmt.Errorf("want %s, got OK", code)
	}
	s, ok := status.FromError(err)
	if !ok || s.Code() != code {
		return fmt.Errorf("want %s, got %s", code, describe(err))
	}
	for _, part := range parts {
		if !strings.Contains(s.Message(), part) {
			return fmt.Errorf("want %s naming %q, got %s", code, part, describe(err))
		}
	}
	return nil
}

// wantMessage checks for the code and exactly the message.
func wantMessage(err error, code codes.Code, message string) error {
	if err := wantStatus(err, code); err != nil {
		return err
	}
	if got := status.Convert(err).Message(); got != message {
		return fmt.Errorf("want %s %q, got %s", code, message, describe(err))
	}
	return nil
}
