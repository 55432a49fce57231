/**
 * Checks of values read off the wire (server frames and history answers).
 * Shared by the frame router, the publish tracker and the history reader, so
 * every part accepts exactly the same shapes.
 */
import type { PresenceMember } from './types.js';

/** A seq, head, id counter…: a non-negative safe integer. */
export function isInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A presence member `{id, info?}`, or `null` if `value` is not one. */
export function parseMember(value: unknown): PresenceMember | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const v = value as Record<string, unknown>;
  if (typeof v.id !== 'string') return null;
  const member: PresenceMember = { id: v.id };
  if ('info' in v && v.info !== undefined && v.info !== null) member.info = v.info;
  return member;
}

/** A presence member list, or `null` if any item is not a member. */
export function parseMembers(value: unknown): PresenceMember[] | null {
  if (!Array.isArray(value)) return null;
  const members: PresenceMember[] = [];
  for (const item of value) {
    const member = parseMember(item);
    if (member === null) return null;
    members.push(member);
  }
  return members;
}
