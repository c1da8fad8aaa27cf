import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';

/**
 * The `sa` variant's search attributes: the two this plugin's mirror sets, with values as long as its
 * pseudonyms, set by the application itself (what search attributes cost without this plugin).
 */
export const SA_PAIRS = [
  { key: defineSearchAttributeKey('UserId', SearchAttributeType.KEYWORD), value: 'u'.repeat(22) },
  { key: defineSearchAttributeKey('WorkspaceId', SearchAttributeType.KEYWORD), value: 'w'.repeat(22) },
];
