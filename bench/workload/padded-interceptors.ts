// Diagnostic (`padded` variant): carries a header as large as this plugin's (≈ 1.1 KB) from the start to
// every activity, and does nothing else. Its cost is what the header's size alone costs the SDK,
// the core and the server, with no crypto, verification, audit or mirrors.
import type { Payload } from '@temporalio/common';
import type { WorkflowInterceptors } from '@temporalio/workflow';

export const PADDING_HEADER = 'bench-padding';

export const interceptors = (): WorkflowInterceptors => {
  let padding: Payload | undefined;
  return {
    inbound: [
      {
        execute(input, next) {
          padding = input.headers[PADDING_HEADER];
          return next(input);
        },
      },
    ],
    outbound: [
      {
        scheduleActivity(input, next) {
          // Like the plugin, each activity's header is written anew (here: the same bytes).
          return next(
            padding ? { ...input, headers: { ...input.headers, [PADDING_HEADER]: padding } } : input,
          );
        },
      },
    ],
  };
};
