import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';

// Where the mirrors live, shared by the edge (which writes them at start) and workflow code (which
// copies them to the children it starts). Its own module because the workflow sandbox loads it: no
// validation library, nothing but the SDK's common package.

/** Memo key holding the mirrored context. */
export const MEMO_KEY = 'userContext';
/** Search attribute `UserId` (Keyword) of the search-attribute mirror: register it in the namespace. */
export const USER_ID_ATTRIBUTE = defineSearchAttributeKey('UserId', SearchAttributeType.KEYWORD);
/** Search attribute `WorkspaceId` (Keyword) of the search-attribute mirror: register it too. */
export const WORKSPACE_ID_ATTRIBUTE = defineSearchAttributeKey('WorkspaceId', SearchAttributeType.KEYWORD);
