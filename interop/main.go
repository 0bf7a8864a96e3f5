// choo-interop checks a choo.v1.DaemonService daemon's wire contract from an
// independent gRPC stack (grpc-go), the way a Go client of the daemon sees it.
//
//	choo-interop -socket PATH [-checks W1,R5,...] [-v]
//
// The daemon must also serve choo.conformance.v1.ConformanceControl (the
// reference daemon: `choo-ref daemon --conformance-control`) and run real
// jobs: the R checks start jobs from task folders this program writes into a
// temporary directory, whose commands wait on files it creates.
//
// It prints one line per check, "PASS <id> <what>" or "FAIL <id> <what>: <why>",
// and exits 0 when every selected check passed, 1 when one failed, 2 when it
// could not run (bad arguments, no daemon answering).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	conformancev1 "choo-interop/gen/choo/conformance/v1"
	apiv1 "choo-interop/gen/choo/v1"
)

// Every check ends within this, whatever the daemon does.
const checkTimeout = 60 * time.Second

// One RPC, or one wait for a condition, ends within this.
const callTimeout = 20 * time.Second

func main() {
	os.Exit(run())
}

func run() int {
	socket := flag.String("socket", "", "the daemon's Unix socket (required)")
	only := flag.String("checks", "", "comma-separated check ids to run (default: all)")
	verbose := flag.Bool("v", false, "also print what each check did")
	flag.Parse()
	if *socket == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: choo-interop -socket PATH [-checks W1,R5,...] [-v]")
		return 2
	}
	selected, err := selectChecks(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "choo-interop:", err)
		return 2
	}
	path, err := filepath.Abs(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "choo-interop:", err)
		return 2
	}
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "choo-interop:", err)
		return 2
	}
	defer conn.Close()
	daemon := apiv1.NewDaemonServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	_, err = daemon.Health(ctx, &apiv1.HealthRequest{}, grpc.WaitForReady(true))
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "choo-interop: no daemon answers Health on %s: %v\n", path, err)
		return 2
	}

	work, err := os.MkdirTemp("", "choo-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "choo-interop:", err)
		return 2
	}
	env := &env{
		daemon:  daemon,
		control: conformancev1.NewConformanceControlClient(conn),
		work:    work,
		verbose: *verbose,
	}
	defer env.cleanUp()

	failed := 0
	for _, c := range selected {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		err := c.run(ctx, env)
		cancel()
		if err != nil {
			failed++
			fmt.Printf("FAIL %-6s %s: %v\n", c.id, c.what, err)
		} else {
			fmt.Printf("PASS %-6s %s\n", c.id, c.what)
		}
	}
	fmt.Printf("%d passed, %d failed\n", len(selected)-failed, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func selectChecks(only string) ([]check, error) {
	if only == "" {
		return checks, nil
	}
	byID := map[string]check{}
	for _, c := range checks {
		byID[c.id] = c
	}
	var selected []check
	for _, id := range strings.Split(only, ",") {
		c, ok := byID[strings.TrimSpace(id)]
		if !ok {
			var ids []string
			for _, c := range checks {
				ids = append(ids, c.id)
			}
			return nil, fmt.Errorf("unknown check %q (the checks: %s)", id, strings.Join(ids, ", "))
		}
		selected = append(selected, c)
	}
	return selected, nil
}
