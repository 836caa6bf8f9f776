// The Go client against a sidecar with --auth-token-file and mutual TLS (see auth_check.mjs for the env).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	moorage "github.com/moorage/moorage/client/go"
	"google.golang.org/grpc/status"
)

func main() {
	cfg, err := moorage.TLSConfig(os.Getenv("MOORAGE_TEST_CA"), os.Getenv("MOORAGE_TEST_CLIENT_CERT"),
		os.Getenv("MOORAGE_TEST_CLIENT_KEY"))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := os.Getenv("MOORAGE_TEST_SECURE_GRPC")
	out := map[string]any{}
	good, err := moorage.Dial(addr, moorage.WithTLS(cfg), moorage.WithToken(os.Getenv("MOORAGE_TEST_TOKEN")))
	if err != nil {
		panic(err)
	}
	agents, err := good.Agents(ctx)
	if err != nil {
		panic(err)
	}
	out["agents"] = len(agents)
	good.Close()
	noToken, err := moorage.Dial(addr, moorage.WithTLS(cfg))
	if err != nil {
		panic(err)
	}
	if _, err := noToken.Agents(ctx); err != nil {
		out["noToken"] = status.Code(err).String()
	} else {
		out["noToken"] = "OK"
	}
	noToken.Close()
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
