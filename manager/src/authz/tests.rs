use std::sync::Mutex;

use super::*;

fn alice() -> Subject {
    Subject {
        user: "dev-alice".to_owned(),
        groups: vec!["system:authenticated".to_owned()],
    }
}

/// Allows exactly the listed accesses and records every question.
struct Fake {
    allowed: Vec<Access>,
    asked: Mutex<Vec<(Subject, Access)>>,
    fail: bool,
}

impl Fake {
    fn allowing(allowed: Vec<Access>) -> Fake {
        Fake {
            allowed,
            asked: Mutex::default(),
            fail: false,
        }
    }
}

impl Reviewer for Fake {
    fn review<'a>(
        &'a self,
        subject: &'a Subject,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, ReviewError>> {
        self.asked
            .lock()
            .unwrap()
            .push((subject.clone(), access.clone()));
        let answer = if self.fail {
            Err(ReviewError::NoStatus)
        } else {
            Ok(self.allowed.contains(access))
        };
        Box::pin(async move { answer })
    }
}

#[test]
fn refusals_name_user_access_and_remedy() {
    assert_eq!(
        refusal(&alice(), &Access::create_intercept("prod")),
        "forbidden by RBAC: user \"dev-alice\" may not create intercepts.tether.dev in namespace \
         \"prod\"; bind the ClusterRole tether-intercept there (a RoleBinding)"
    );
    assert_eq!(
        refusal(&alice(), &Access::list_intercepts("default")),
        "forbidden by RBAC: user \"dev-alice\" may not list intercepts.tether.dev in namespace \
         \"default\"; bind the ClusterRole tether-intercept there (a RoleBinding)"
    );
    assert_eq!(
        refusal(&alice(), &Access::create_session()),
        "forbidden by RBAC: user \"dev-alice\" may not create sessions.tether.dev; bind the \
         ClusterRole tether-client to them (a ClusterRoleBinding)"
    );
}

#[tokio::test]
async fn check_asks_for_exactly_the_access_and_the_subject() {
    let fake = Fake::allowing(vec![Access::create_intercept("default")]);
    assert_eq!(
        check(&fake, &alice(), &Access::create_intercept("default")).await,
        Ok(())
    );
    let refused = check(&fake, &alice(), &Access::create_intercept("prod"))
        .await
        .unwrap_err();
    assert!(refused.starts_with("forbidden by RBAC"), "{refused}");
    // Another verb in an allowed namespace is another question.
    assert!(check(&fake, &alice(), &Access::list_intercepts("default"))
        .await
        .is_err());
    let asked = fake.asked.lock().unwrap();
    assert_eq!(asked.len(), 3);
    assert!(asked.iter().all(|(s, _)| *s == alice()));
    assert_eq!(asked[1].1.namespace.as_deref(), Some("prod"));
}

#[tokio::test]
async fn an_unanswered_question_is_a_refusal() {
    let mut fake = Fake::allowing(vec![Access::create_intercept("default")]);
    fake.fail = true;
    let refused = check(&fake, &alice(), &Access::create_intercept("default"))
        .await
        .unwrap_err();
    assert!(
        refused.starts_with("could not check whether user \"dev-alice\" may create"),
        "{refused}"
    );
}

#[test]
fn owners_are_the_verified_user_and_a_host_hint() {
    assert_eq!(owner(&alice(), "root@laptop"), "dev-alice (root@laptop)");
    // A client claiming to be someone else only changes the hint.
    assert_eq!(owner(&alice(), "admin"), "dev-alice (admin)");
    assert_eq!(owner(&alice(), ""), "dev-alice");
    assert_eq!(owner(&alice(), "a\nb\u{1b}[31m"), "dev-alice (ab[31m)");
    assert_eq!(
        owner(&alice(), &"x".repeat(500)).len(),
        "dev-alice ()".len() + 64
    );
    // And back: the user, whatever the hint claims.
    for hint in ["root@laptop", "admin (x)", ""] {
        assert_eq!(owner_user(&owner(&alice(), hint)), "dev-alice");
    }
}

#[test]
fn cached_answers_expire() {
    let mut cache = Cache::new(Duration::from_secs(5));
    let t0 = Instant::now();
    let access = Access::create_intercept("default");
    assert_eq!(cache.get(t0, &alice(), &access), None);
    cache.put(t0, &alice(), &access, true);
    assert_eq!(
        cache.get(t0 + Duration::from_secs(4), &alice(), &access),
        Some(true)
    );
    assert_eq!(
        cache.get(t0 + Duration::from_secs(5), &alice(), &access),
        None
    );
    // Per subject and per access.
    let bob = Subject {
        user: "bob".to_owned(),
        groups: Vec::new(),
    };
    assert_eq!(cache.get(t0, &bob, &access), None);
    assert_eq!(
        cache.get(t0, &alice(), &Access::list_intercepts("default")),
        None
    );
    // Different groups are a different subject.
    let mut admin_alice = alice();
    admin_alice.groups.push("system:masters".to_owned());
    assert_eq!(cache.get(t0, &admin_alice, &access), None);
}

#[test]
fn a_full_cache_sweeps_expired_answers() {
    let mut cache = Cache::new(Duration::from_secs(5));
    let t0 = Instant::now();
    for i in 0..CACHE_SWEEP {
        cache.put(
            t0,
            &alice(),
            &Access::create_intercept(&format!("ns{i}")),
            true,
        );
    }
    let later = t0 + Duration::from_secs(10);
    cache.put(later, &alice(), &Access::create_session(), true);
    assert_eq!(cache.answers.len(), 1);
}
