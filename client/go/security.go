package moorage

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// WithToken sends "authorization: Bearer <token>" with every call: a token of a sidecar started with
// --auth-token-file, or a JWT for one started with --auth-jwks. Typically WithToken(os.Getenv("MOORAGE_TOKEN")).
func WithToken(token string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(bearer{token: token})
}

type bearer struct{ token string }

func (b bearer) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so that a token also works against a loopback sidecar without TLS.
func (b bearer) RequireTransportSecurity() bool { return false }

// WithTLS talks TLS with the given configuration (a private CA, a client certificate for mutual TLS).
func WithTLS(cfg *tls.Config) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// TLSConfig reads PEM files: caFile ("" for the system roots) to trust, certFile/keyFile ("" for none) to present.
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("moorage: no PEM certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
