import { currentScope } from './scope.js';

/**
 * `attributes` with the pseudonyms of the user the running activity or Nexus handler was verified for
 * (`userPseudonym`, `workspacePseudonym`: the header's keyed pseudonyms, never the ids), for the SDK's
 * log lines (`getLogAttributes`): an operator finds every line of one user's work, in workflows and
 * activities alike, without the logs holding their ids (`pseudonymsOf` or the key tool's lookup file
 * map an id to them). Unchanged outside such a handler and in system activities.
 */
export function withUserPseudonyms(attributes: Record<string, unknown>): Record<string, unknown> {
  const header = currentScope()?.header;
  return header
    ? Object.assign({}, attributes, { userPseudonym: header.sub, workspacePseudonym: header.ws })
    : attributes;
}
