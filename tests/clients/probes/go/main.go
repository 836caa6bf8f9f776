// The Go client across a gateway restart (see ../reconnect_probe.mjs for the env and the output).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	moorage "github.com/moorage/moorage/client/go"
	"google.golang.org/grpc/status"
)

func envInt(name string, fallback int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}

// waitOnce is the probe's PROBE_WAIT mode (see ../reconnect_probe.mjs).
func waitOnce(client *moorage.Client, id string) {
	fmt.Println(`{"waiting": true}`)
	line := map[string]any{"ok": true}
	o, err := client.WaitForOrchestration(context.Background(), id, 60*time.Second)
	if err != nil {
		line["ok"], line["code"] = false, status.Code(err).String()
	} else {
		line["status"] = o.Status
	}
	out, _ := json.Marshal(line)
	fmt.Println(string(out))
}

func main() {
	interval := time.Duration(envInt("PROBE_INTERVAL_MS", 500)) * time.Millisecond
	until := time.Now().Add(time.Duration(envInt("PROBE_SECONDS", 180)) * time.Second)
	client, err := moorage.Dial(os.Getenv("MOORAGE_ADDRESS"))
	if err != nil {
		panic(err)
	}
	defer client.Close()
	if id := os.Getenv("PROBE_WAIT"); id != "" {
		waitOnce(client, id)
		return
	}
	for time.Now().Before(until) {
		if _, err := os.Stat(os.Getenv("PROBE_STOP")); err == nil {
			return
		}
		line := map[string]any{"t": float64(time.Now().UnixMicro()) / 1e6, "ok": true}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // longer than the client's keepalive
		if _, err := client.Agents(ctx); err != nil {
			line["ok"], line["code"] = false, status.Code(err).String()
		}
		cancel()
		out, _ := json.Marshal(line)
		fmt.Println(string(out))
		time.Sleep(interval)
	}
}
