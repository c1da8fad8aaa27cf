export { AgentRepository } from './agents.js';
export type { Agent, NewAgent } from './agents.js';
export { AgentRunRepository } from './agent-runs.js';
export type { AgentRun, AgentRunStatus, RunRecordEnding } from './agent-runs.js';
export { DocumentRepository } from './documents.js';
export { ScheduleRepository } from './schedules.js';
export type { WorkspaceDocument } from './documents.js';
export {
  AdminChangedError,
  LastAdminError,
  WorkspaceRepository,
  MembershipRepository,
} from './workspaces.js';
export type { Workspace, Membership } from './workspaces.js';
export type { Scope } from './common.js';
