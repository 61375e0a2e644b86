/**
 * socktune: control the TCP lifecycle of Node.js sockets.
 * @module socktune
 */
// First: an unsupported Node stops here with an error naming the supported range.
import './supported.js';
export { configure, readOptions, supportedOptions, limits, isConfigureError } from './options.js';
export type { SocketOptions, KeepAliveOptions, AppliedOptions, ConfigureResult, ConfigureError, PortRange } from './options.js';
export { connect, createConnection } from './stage/connect.js';
export type { ConnectOptions } from './stage/connect.js';
export { listen } from './stage/listen.js';
export type { ListenOptions } from './stage/listen.js';
export { tcpInfo, sendQueue, receiveQueue, socketCookie, tcpState } from './views.js';
export type { TcpInfo, TcpState, SendQueue } from './views.js';
export type { TcpSocketLike } from './handle.js';
export { codes } from './errors.js';
export type { KernelError } from './errors.js';
export { connectionStates, listConnections, connectionReport } from './diagnose/states.js';
export type { ConnectionFilter, ConnectionStates, ConnectionReport, Connection } from './diagnose/states.js';
export type { TopOfState, TopEntry, SocketOwner } from './diagnose/top.js';
export { createCollector } from './metrics.js';
export type { CollectorOptions, Collector } from './metrics.js';
export type { PoolCounters } from './metrics/table.js';
export { createInstruments } from './otel.js';
export type { InstrumentOptions, Instruments } from './otel.js';
export { sysctlAudit, middleboxIdleTimeouts } from './diagnose/audit.js';
export type { SysctlAudit, Finding, Severity, AuditOptions, Unreadable } from './diagnose/audit.js';
export { sockstat, netCounters, readSysctl, kernelVersion } from './diagnose/proc.js';
export type { Sockstat, NetCounters, TcpExtCounters, TcpCounters, KernelVersion } from './diagnose/proc.js';
export { presets, compose, keepAliveBudget } from './policy/presets.js';
export type { Policy, PolicyOverrides, ResetScope, DrainTimeoutAction, HeartbeatOptions, PoolRetry, Http2Options } from './policy/presets.js';
export { resetClose, closeChannel } from './policy/reset.js';
export type {
  ResetCloseOptions,
  CloseReport,
  CloseReason,
  CloseMessage,
  TypedChannel,
  ConnectionEnd,
  ConnectionEndMessage,
  ConnectionInitiator,
} from './policy/reset.js';
export { closeCodes } from './policy/close.js';
export { Guard, guardOf } from './guard/guard.js';
export type { GuardReason, GuardStats, IdleEvent, IdleKind, GuardCloseEvent, GuardEvents, ShutdownOptions, ShutdownReport } from './guard/guard.js';
export { tune } from './integrations/tune.js';
export { tuneServer } from './integrations/server.js';
export { createAgent, createHttpsAgent, PolicyAgent, PolicyHttpsAgent } from './integrations/agent.js';
export type { PoolPolicy, PolicyAgentOptions, PolicyHttpsAgentOptions, KeepAliveAgentOptions, AgentStatus, AgentCounters } from './integrations/agent.js';
export { createConnector, createDispatcher } from './integrations/undici.js';
export { registeredGuards } from './register/process.js';
export type { PolicyConnector, PolicyDispatcher, Connector, ConnectorOptions, ConnectorCallback } from './integrations/undici.js';

import { followGlobalMeterProvider, otelSetting } from './otel.js';

// OpenTelemetry with no code: socktune's instruments on the global MeterProvider once the
// application sets one (SOCKTUNE_OTEL; nothing is loaded at import, and nothing here can throw).
try {
  followGlobalMeterProvider(otelSetting(process.env.SOCKTUNE_OTEL));
} catch (err) {
  process.emitWarning(`${(err as Error).message}: OpenTelemetry metrics are off`, { code: (err as { code?: string }).code });
}
