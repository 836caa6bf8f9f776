package dev.moorage.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.grpc.Status;
import java.io.File;
import org.junit.jupiter.api.Test;

/**
 * The client against a sidecar with --auth-token-file and mutual TLS. Run by
 * tests/security/test_security_thin_clients.py ({@code mvn test -Dtest=SecureConnectionTest}), which sets
 * MOORAGE_TEST_SECURE_GRPC, MOORAGE_TEST_TOKEN, MOORAGE_TEST_CA, MOORAGE_TEST_CLIENT_CERT and MOORAGE_TEST_CLIENT_KEY;
 * the pom leaves it out of the plain {@code mvn test}.
 */
class SecureConnectionTest {
  private static File file(String env) {
    String path = System.getenv(env);
    assertNotNull(path, env + " is not set (run through tests/security/test_security_thin_clients.py)");
    return new File(path);
  }

  @Test
  void tokenAndMutualTls() throws Exception {
    String address = System.getenv("MOORAGE_TEST_SECURE_GRPC");
    assertNotNull(address, "MOORAGE_TEST_SECURE_GRPC is not set");
    File ca = file("MOORAGE_TEST_CA");
    File cert = file("MOORAGE_TEST_CLIENT_CERT");
    File key = file("MOORAGE_TEST_CLIENT_KEY");
    try (MoorageClient good = MoorageClient.connect(address, System.getenv("MOORAGE_TEST_TOKEN"), ca, cert, key)) {
      assertNotNull(good.agents());
    }
    try (MoorageClient noToken = MoorageClient.connect(address, null, ca, cert, key)) {
      MoorageException e = assertThrows(MoorageException.class, noToken::agents);
      assertEquals(Status.Code.UNAUTHENTICATED, e.code());
    }
  }
}
