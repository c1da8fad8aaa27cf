export { AgentExecutionWorkflow } from './agent-execution.js';
