// A workflow interceptor module that does nothing: the cost floor of any interceptor-based plugin.
import type { WorkflowInterceptors } from '@temporalio/workflow';

export const interceptors = (): WorkflowInterceptors => ({ inbound: [], outbound: [] });
