// go-failover: a go-redis failover client driven by the e2e discovery tests. It finds the
// master (or a replica) only through the Sentinel endpoint given, and prints one line per
// operation: "ok <i> <server addr>" / "err <i> <error>" for writes, "read <server addr> <role>"
// for reads. With -wait N a write counts as "ok" only once `WAIT N` says N replicas have it;
// otherwise it prints "unacked <i> <server addr>".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	sentinel := flag.String("sentinel", "127.0.0.1:26379", "Sentinel endpoint host:port")
	master := flag.String("master", "", "Sentinel master name")
	password := flag.String("password", "", "password of the Redis instances")
	sentinelPassword := flag.String("sentinel-password", "", "password of the Sentinel endpoint")
	mode := flag.String("mode", "write", "write (master, until -duration) or read (replica, -reads times)")
	duration := flag.Duration("duration", 2*time.Minute, "how long to keep writing")
	interval := flag.Duration("interval", 50*time.Millisecond, "pause between writes")
	reads := flag.Int("reads", 5, "reads to make from a replica")
	wait := flag.Int("wait", 0, "replicas that must acknowledge a write")
	flag.Parse()

	client := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:       *master,
		SentinelAddrs:    []string{*sentinel},
		SentinelPassword: *sentinelPassword,
		Password:         *password,
		ReplicaOnly:      *mode == "read",
		DialTimeout:      500 * time.Millisecond,
		ReadTimeout:      500 * time.Millisecond,
		WriteTimeout:     500 * time.Millisecond,
	})
	defer client.Close()

	if *mode == "read" {
		os.Exit(read(client, *reads))
	}
	write(client, *duration, *interval, *wait)
}

// write sets vigil:go:<i> = i, with CLIENT INFO on the same connection to tell which server
// took it (and WAIT, when asked), until the duration is over; errors are printed and retried.
func write(client *redis.Client, duration, interval time.Duration, wait int) {
	deadline := time.Now().Add(duration)
	for i := 0; time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		pipe := client.Pipeline()
		pipe.Set(ctx, fmt.Sprintf("vigil:go:%d", i), i, 0)
		info := pipe.ClientInfo(ctx)
		var acked *redis.Cmd
		if wait > 0 {
			acked = pipe.Do(ctx, "WAIT", wait, 1000)
		}
		_, err := pipe.Exec(ctx)
		cancel()
		if err != nil {
			fmt.Printf("err %d %s\n", i, oneLine(err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		verdict := "ok"
		if acked != nil {
			if n, _ := acked.Int64(); n < int64(wait) {
				verdict = "unacked"
			}
		}
		fmt.Printf("%s %d %s\n", verdict, i, info.Val().LAddr)
		time.Sleep(interval)
	}
}

// read reads from a replica n times; it prints the server's address and role each time.
func read(client *redis.Client, n int) int {
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		pipe := client.Pipeline()
		info := pipe.ClientInfo(ctx)
		role := pipe.Do(ctx, "ROLE")
		_, err := pipe.Exec(ctx)
		cancel()
		if err != nil {
			fmt.Printf("err %d %s\n", i, oneLine(err))
			return 1
		}
		parts, _ := role.Slice()
		if len(parts) == 0 {
			fmt.Printf("err %d empty ROLE reply\n", i)
			return 1
		}
		fmt.Printf("read %s %v\n", info.Val().LAddr, parts[0])
	}
	return 0
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
