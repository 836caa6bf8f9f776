package dev.moorage.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;

/**
 * grpc-java's reconnect backoff grows to 120 s and has no public setting, so a client noticed a restarted gateway up
 * to two minutes late. After a call fails UNAVAILABLE the channel tries to connect again at once
 * ({@link ManagedChannel#resetConnectBackoff()}): the next call finds the gateway as soon as it is back. Attempts
 * follow the caller's own calls, so a client that waits between calls waits between attempts too.
 */
final class ReconnectOnUnavailable implements ClientInterceptor {
  private final ManagedChannel channel;

  ReconnectOnUnavailable(ManagedChannel channel) {
    this.channel = channel;
  }

  @Override
  public <Q, R> ClientCall<Q, R> interceptCall(MethodDescriptor<Q, R> method, CallOptions options, Channel next) {
    return new ForwardingClientCall.SimpleForwardingClientCall<Q, R>(next.newCall(method, options)) {
      @Override
      public void start(Listener<R> listener, Metadata headers) {
        super.start(new ForwardingClientCallListener.SimpleForwardingClientCallListener<R>(listener) {
          @Override
          public void onClose(Status status, Metadata trailers) {
            if (status.getCode() == Status.Code.UNAVAILABLE) channel.resetConnectBackoff();
            super.onClose(status, trailers);
          }
        }, headers);
      }
    };
  }
}
