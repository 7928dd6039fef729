package main

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const ms = int64(time.Millisecond)

func operations(records []Record) ([]porcupine.Operation, Summary, error) {
	return Operations(records, false)
}

func write(client int, key, value string, call, ret int64, outcome string) Record {
	return Record{Client: client, Op: "write", Key: key, Value: value, Call: call * ms, Return: ret * ms, Outcome: outcome}
}

func read(client int, key, value string, call, ret int64, outcome string) Record {
	return Record{Client: client, Op: "read", Key: key, Value: value, Call: call * ms, Return: ret * ms, Outcome: outcome}
}

// expect fails the test unless Porcupine says want of records (drawn to html if not empty).
func expect(t *testing.T, records []Record, html string, want porcupine.CheckResult) {
	t.Helper()
	expectWith(t, records, false, html, want)
}

func expectWith(t *testing.T, records []Record, unconfirmed bool, html string, want porcupine.CheckResult) {
	t.Helper()
	ops, _, err := Operations(records, unconfirmed)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Check(ops, 10*time.Second, html)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// A failover as the scenarios see it when all goes well: the old master takes writes that its
// replicas never get (indeterminate), fails reads and writes once fenced, and the new master
// serves the last acknowledged value.
func TestAFailoverThatKeepsAcknowledgedWritesIsLinearizable(t *testing.T) {
	history := []Record{
		read(0, "k", "", 0, 2, "ok"),
		write(0, "k", "a", 3, 5, "ok"),
		write(1, "j", "x", 3, 6, "ok"),
		read(1, "k", "a", 4, 7, "ok"), // concurrent with the write's acknowledgement
		// The cut: the old master takes b and c, WAIT never counts a replica.
		write(0, "k", "b", 10, 60, "unknown"),
		write(1, "k", "c", 12, 62, "unknown"),
		read(2, "k", "c", 20, 70, "fail"), // served, but not confirmed by a quorum: left out
		write(2, "k", "d", 80, 81, "fail"),
		// The new master has a and j's x.
		read(0, "k", "a", 100, 102, "ok"),
		read(1, "j", "x", 100, 103, "ok"),
		write(1, "k", "e", 104, 106, "ok"),
		read(2, "k", "e", 107, 108, "ok"),
	}
	expect(t, history, "", porcupine.Ok)
}

// An indeterminate write that a confirmed read saw happened: later reads must not go back.
func TestAnIndeterminateWriteMayHaveHappened(t *testing.T) {
	history := []Record{
		write(0, "k", "a", 0, 2, "ok"),
		write(1, "k", "b", 3, 50, "unknown"),
		read(2, "k", "b", 60, 61, "ok"),
		read(2, "k", "b", 62, 63, "ok"),
	}
	expect(t, history, "", porcupine.Ok)
	// A read of a after b was seen.
	expect(t, append(history, read(0, "k", "a", 70, 71, "ok")), "", porcupine.Illegal)
}

// The anomaly the checker is there for: a write acknowledged by the quorum is lost in a
// failover, and the new master serves the older value.
func TestALostAcknowledgedWriteReadBackAsTheOlderValueIsNot(t *testing.T) {
	history := []Record{
		write(0, "k", "a", 0, 2, "ok"),
		read(1, "k", "a", 3, 4, "ok"),
		write(0, "k", "b", 5, 7, "ok"),
		read(1, "k", "b", 8, 9, "ok"),
		// Failover to a replica that never had b.
		read(1, "k", "a", 50, 51, "ok"),
		write(2, "other", "z", 50, 52, "ok"),
	}
	html := filepath.Join(t.TempDir(), "history.html")
	expect(t, history, html, porcupine.Illegal)
	if info, err := os.Stat(html); err != nil || info.Size() == 0 {
		t.Fatalf("no visualisation at %s: %v", html, err)
	}
	ops, _, _ := Operations(history, false)
	anomalies := Anomalies(ops, 10*time.Second)
	if len(anomalies) != 1 || !strings.Contains(anomalies[0], `key k `) ||
		!strings.Contains(anomalies[0], `get k -> "a" by client 1, called at 0.050 s`) {
		t.Fatalf("anomalies: %q", anomalies)
	}
}

func TestOutcomesDecideWhatReachesTheChecker(t *testing.T) {
	ops, summary, err := operations([]Record{
		write(0, "k", "a", 0, 2, "ok"),
		write(0, "k", "b", 3, 4, "unknown"),
		write(0, "k", "c", 5, 6, "fail"),
		read(1, "k", "a", 0, 1, "fail"),
		read(1, "k", "", 0, 1, "ok"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 2 {
		t.Fatalf("ops: %+v", ops)
	}
	want := Summary{Writes: 3, WritesOK: 1, WritesUnknown: 1, WritesUnread: 1, WritesFailed: 1,
		Reads: 2, ReadsOK: 1, ReadsFailed: 1}
	if summary != want {
		t.Fatalf("summary %+v", summary)
	}
	ops, _, _ = operations([]Record{write(0, "k", "b", 3, 4, "unknown"), read(1, "k", "b", 5, 6, "ok")})
	if len(ops) != 2 || ops[0].Return != math.MaxInt64 {
		t.Fatalf("an indeterminate write that was read is kept, returning never: %+v", ops)
	}
	if _, _, err := operations([]Record{write(0, "k", "a", 0, 1, "ok"), write(1, "k", "a", 2, 3, "ok")}); err == nil {
		t.Fatal("a value written twice must be refused")
	}
	if _, _, err := operations([]Record{write(0, "k", "", 0, 1, "ok")}); err == nil {
		t.Fatal("the empty value is the absent key: writing it must be refused")
	}
	if _, err := Read(strings.NewReader(`{"client":0,"op":"read","key":"k","value":"","call":1,"return":2,"outcome":"ok"}` + "\n\n")); err != nil {
		t.Fatal(err)
	}
}

// What the confirmation of reads is for: a bare GET on a master that is cut off returns a write
// it never replicated, which the failover then discards.
func TestAnUnconfirmedReadOfAWriteThatIsThenLostIsNot(t *testing.T) {
	dirty := read(2, "k", "b", 20, 30, "fail")
	dirty.Served = true
	history := []Record{
		write(0, "k", "a", 0, 2, "ok"),
		write(1, "k", "b", 10, 60, "unknown"),
		dirty,
		read(0, "k", "a", 100, 102, "ok"),
	}
	expectWith(t, history, false, "", porcupine.Ok)
	expectWith(t, history, true, "", porcupine.Illegal)
}
