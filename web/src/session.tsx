/** Who is signed in and where onboarding stands, shared by every page. */
import { createContext, useContext } from 'react';
import type { Me, OnboardingState } from './api.ts';

export interface Session {
  me: Me | null;
  onboarding: OnboardingState;
  /** After sign-in or onboarding: remember the user and the CSRF token. */
  signedIn: (me: Me) => void;
  setOnboarding: (s: OnboardingState) => void;
  /** Re-reads /auth/me (memberships change when members are added). */
  refresh: () => Promise<void>;
  signOut: () => Promise<void>;
}

export const SessionContext = createContext<Session | null>(null);

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error('useSession outside <SessionContext>');
  return s;
}

/** The signed-in user, for pages that only render when someone is signed in. */
export function useMe(): Me {
  const { me } = useSession();
  if (!me) throw new Error('useMe without a signed-in user');
  return me;
}
