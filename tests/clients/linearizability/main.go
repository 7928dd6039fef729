// Command linearizability checks a history that vigil's partition scenarios recorded
// (tests/e2e/support/history.rs) with Porcupine, a published linearizability checker
// (github.com/anishathalye/porcupine), not one written here.
//
// Usage: linearizability [-html FILE] [-timeout DURATION] [-unconfirmed-reads] HISTORY.jsonl
//
// Prints "linearizable" and exits 0, or prints the anomaly, writes Porcupine's HTML
// visualisation to FILE (default HISTORY.html) and exits 1. Exits 2 when the history cannot be
// read, 3 when Porcupine could not decide within the timeout.
//
// # The property checked
//
// Every key is a register (partitioned by key: the history is linearizable iff each key's is).
// What is checked is that the acknowledged writes and the confirmed reads of every register,
// with the indeterminate writes that may or may not have happened, form a linearizable history:
//
//   - A write is SET key value followed by WAIT quorum on the same connection, against the
//     instance the client resolved as master (from the operator's Sentinel endpoint) just
//     before. Values are unique. "ok": SET answered OK and WAIT counted the master's quorum of
//     replicas (the write survives any promotion vigil makes). "fail": the SET was refused
//     (READONLY, NOREPLICAS...) or never sent (no connection): it did not happen and is left
//     out. "unknown": SET answered OK but WAIT counted fewer replicas, or the request timed out
//     or its connection broke after it was sent: Redis replicates asynchronously, so it may or
//     may not survive. It is given an infinite return time (the standard way to model
//     Jepsen's "info" operations in Porcupine): it may take effect at any point after its call,
//     or never (at the end, after everything observed). An indeterminate write whose value no
//     confirmed read returned is left out before Porcupine runs: values are unique, so placing it
//     after every other operation is always possible and changes no read, and a history is
//     linearizable with it iff it is without it. This is exact, not an approximation; without
//     it, a few dozen such writes per key (a partition's worth) make Porcupine's search
//     exponential.
//   - A read is GET key followed, on the same connection, by a write of a scratch key of the
//     client and WAIT quorum: "ok" only when the instance took that write (it was a writable
//     master when it served the GET) and the master's quorum of replicas acknowledged it (so
//     they hold everything the GET saw). Any other read is "fail" and left out: a read from a
//     fenced or demoted instance, or a master that cannot reach its quorum, says nothing about
//     the register. A plain GET on a master is not linearizable in Redis: it can return a
//     write the master took but did not replicate yet, which a failover then discards; those
//     reads are what the confirmation excludes, and they are counted and reported.
//     -unconfirmed-reads checks them too (every read the GET answered), to show what the
//     confirmation buys; the scenarios only print that verdict.
//
// An empty value is the absent key (GET answered nil); written values are never empty.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Record is one line of a history file.
type Record struct {
	Client  int    `json:"client"`
	Op      string `json:"op"` // "read" or "write"
	Key     string `json:"key"`
	Value   string `json:"value"`
	Call    int64  `json:"call"`   // ns from the start of the recording
	Return  int64  `json:"return"` // ns from the start of the recording
	Outcome string `json:"outcome"`
	// A read whose GET was answered (its outcome may still be "fail": not confirmed).
	Served bool `json:"served"`
}

type input struct {
	write bool
	key   string
	value string
}

// registerModel is a register per key: the state of a partition is the key's value.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			key := op.Input.(input).key
			if _, seen := byKey[key]; !seen {
				keys = append(keys, key)
			}
			byKey[key] = append(byKey[key], op)
		}
		sort.Strings(keys)
		partitions := make([][]porcupine.Operation, 0, len(keys))
		for _, key := range keys {
			partitions = append(partitions, byKey[key])
		}
		return partitions
	},
	Init: func() interface{} { return "" },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		op := in.(input)
		if op.write {
			return true, op.value
		}
		return out.(string) == state.(string), state
	},
	DescribeOperation: func(in, out interface{}) string {
		op := in.(input)
		if op.write {
			return fmt.Sprintf("set %s %q", op.key, op.value)
		}
		return fmt.Sprintf("get %s -> %q", op.key, out.(string))
	},
	DescribeState: func(state interface{}) string { return fmt.Sprintf("%q", state.(string)) },
}

// Summary counts what a history held and what went to the checker.
type Summary struct {
	Writes, WritesOK, WritesUnknown, WritesUnread, WritesFailed int
	Reads, ReadsOK, ReadsFailed                                 int
}

func (s Summary) String() string {
	return fmt.Sprintf("%d writes (%d acknowledged, %d indeterminate of which %d never read, "+
		"%d failed), %d reads (%d confirmed, %d unconfirmed and left out)",
		s.Writes, s.WritesOK, s.WritesUnknown, s.WritesUnread, s.WritesFailed,
		s.Reads, s.ReadsOK, s.ReadsFailed)
}

// Operations turns records into Porcupine's operations, leaving out what did not happen and,
// unless unconfirmed is set, the reads that were not confirmed.
func Operations(records []Record, unconfirmed bool) ([]porcupine.Operation, Summary, error) {
	var ops []porcupine.Operation
	var s Summary
	for i, r := range records {
		if r.Return < r.Call {
			return nil, s, fmt.Errorf("record %d returns before its call", i+1)
		}
		op := porcupine.Operation{
			ClientId: r.Client,
			Input:    input{write: r.Op == "write", key: r.Key, value: r.Value},
			Call:     r.Call,
			Return:   r.Return,
		}
		switch r.Op {
		case "write":
			s.Writes++
			if r.Value == "" {
				return nil, s, fmt.Errorf("record %d writes the empty value (the absent key)", i+1)
			}
			switch r.Outcome {
			case "ok":
				s.WritesOK++
			case "unknown":
				s.WritesUnknown++
				op.Return = math.MaxInt64
			case "fail":
				s.WritesFailed++
				continue
			default:
				return nil, s, fmt.Errorf("record %d: outcome %q", i+1, r.Outcome)
			}
			op.Output = ""
		case "read":
			s.Reads++
			switch {
			case r.Outcome == "ok" || (unconfirmed && r.Served):
				s.ReadsOK++
			case r.Outcome == "fail" || r.Outcome == "unknown":
				s.ReadsFailed++
				continue
			default:
				return nil, s, fmt.Errorf("record %d: outcome %q", i+1, r.Outcome)
			}
			op.Output = r.Value
		default:
			return nil, s, fmt.Errorf("record %d: op %q", i+1, r.Op)
		}
		ops = append(ops, op)
	}
	return leaveOutUnread(ops, &s)
}

// leaveOutUnread drops the indeterminate writes whose value no read returned (see the top of
// this file for why that is exact); it needs every written value of a key to be unique.
func leaveOutUnread(ops []porcupine.Operation, s *Summary) ([]porcupine.Operation, Summary, error) {
	type kv struct{ key, value string }
	read := map[kv]bool{}
	written := map[kv]bool{}
	for _, op := range ops {
		in := op.Input.(input)
		if !in.write {
			read[kv{in.key, op.Output.(string)}] = true
		} else if written[kv{in.key, in.value}] {
			return nil, *s, fmt.Errorf("key %s: value %q written twice", in.key, in.value)
		} else {
			written[kv{in.key, in.value}] = true
		}
	}
	kept := ops[:0]
	for _, op := range ops {
		in := op.Input.(input)
		if in.write && op.Return == math.MaxInt64 && !read[kv{in.key, in.value}] {
			s.WritesUnread++
			continue
		}
		kept = append(kept, op)
	}
	return kept, *s, nil
}

// Read parses JSON lines.
func Read(r io.Reader) ([]Record, error) {
	var records []Record
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; scanner.Scan(); n++ {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		records = append(records, rec)
	}
	return records, scanner.Err()
}

// Check runs Porcupine; with a non-empty htmlPath it writes the visualisation when the history
// is not linearizable.
func Check(ops []porcupine.Operation, timeout time.Duration, htmlPath string) (porcupine.CheckResult, error) {
	result, info := porcupine.CheckOperationsVerbose(registerModel, ops, timeout)
	if result == porcupine.Illegal && htmlPath != "" {
		if err := porcupine.VisualizePath(registerModel, info, htmlPath); err != nil {
			return result, fmt.Errorf("writing %s: %w", htmlPath, err)
		}
	}
	return result, nil
}

// Anomalies describes, for every key whose history is not linearizable, the longest order
// Porcupine found that agrees with a register and the first operation that cannot follow it.
func Anomalies(ops []porcupine.Operation, timeout time.Duration) []string {
	var found []string
	for _, keyOps := range registerModel.Partition(ops) {
		result, info := porcupine.CheckOperationsVerbose(registerModel, keyOps, timeout)
		if result != porcupine.Illegal {
			continue
		}
		key := keyOps[0].Input.(input).key
		var longest []porcupine.Operation
		for _, partial := range info.PartialLinearizationsOperations()[0] {
			if len(partial) > len(longest) {
				longest = partial
			}
		}
		placed := map[[3]int64]bool{}
		for _, op := range longest {
			placed[identity(op)] = true
		}
		// The operation that had to be placed first (its return came first) but never was.
		var stuck *porcupine.Operation
		for i := range keyOps {
			op := &keyOps[i]
			if !placed[identity(*op)] && (stuck == nil || op.Return < stuck.Return) {
				stuck = op
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "key %s (%d operations): the longest linearizable prefix has %d", key,
			len(keyOps), len(longest))
		from := max(0, len(longest)-3)
		for _, op := range longest[from:] {
			fmt.Fprintf(&b, "\n  ... %s", describe(op))
		}
		if stuck != nil {
			fmt.Fprintf(&b, "\n  cannot be followed by %s", describe(*stuck))
		}
		found = append(found, b.String())
	}
	return found
}

func identity(op porcupine.Operation) [3]int64 {
	return [3]int64{int64(op.ClientId), op.Call, op.Return}
}

func describe(op porcupine.Operation) string {
	ret := "never (indeterminate)"
	if op.Return != math.MaxInt64 {
		ret = fmt.Sprintf("%.3f s", float64(op.Return)/1e9)
	}
	return fmt.Sprintf("%s by client %d, called at %.3f s, returned %s",
		registerModel.DescribeOperation(op.Input, op.Output), op.ClientId, float64(op.Call)/1e9, ret)
}

func main() {
	html := flag.String("html", "", "where to write the visualisation of a violation (default HISTORY.html)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up (exit 3) after this long")
	unconfirmed := flag.Bool("unconfirmed-reads", false, "check every read the GET answered, confirmed or not")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: linearizability [-html FILE] [-timeout DURATION] [-unconfirmed-reads] HISTORY.jsonl")
		os.Exit(2)
	}
	path := flag.Arg(0)
	if *html == "" {
		*html = strings.TrimSuffix(path, ".jsonl") + ".html"
	}
	records, err := readFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
		os.Exit(2)
	}
	ops, summary, err := Operations(records, *unconfirmed)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
		os.Exit(2)
	}
	fmt.Printf("%s: %s\n", path, summary)
	started := time.Now()
	result, err := Check(ops, *timeout, *html)
	took := time.Since(started).Round(time.Millisecond)
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	case result == porcupine.Ok:
		fmt.Printf("linearizable (checked in %s)\n", took)
	case result == porcupine.Illegal:
		fmt.Printf("NOT linearizable (checked in %s); Porcupine's partial linearizations are "+
			"drawn in %s\n", took, *html)
		for _, anomaly := range Anomalies(ops, *timeout) {
			fmt.Println(anomaly)
		}
		os.Exit(1)
	default:
		fmt.Printf("undecided: Porcupine gave up after %s\n", took)
		os.Exit(3)
	}
}

func readFile(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	records, err := Read(f)
	if err == nil && len(records) == 0 {
		err = errors.New("no operations")
	}
	return records, err
}
