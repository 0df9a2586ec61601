//! Desired state from CSV files, as HR feeds send it: identities and assignments, attributes as
//! columns, entitlements separated by `;`; every error names the file, the line and the column.

use provision::config::SourceError;
use provision::import;
use provision_tests::Deployment;

const PEOPLE: &str = "entity_type,key,display_name,department,site\n\
Directory_User,dave,Dave Doe,Ops,\n\
Directory_User,erin,\"Erin, the second\",Sales,Lyon\n";

const ACCESS: &str = "identity,resource_type,entitlements,valid_until,userName,email,group\n\
dave,SaaS_Account,Users;Ops,,dave,dave@example.com,\n\
erin,SaaS_Account,Users,2030-01-01T00:00:00Z,erin,erin@example.com,\n\
erin,Finance_Group_Membership,Finance-Approvers,,,,Finance-Approvers\n";

fn load(deployment: &Deployment, files: &[(&str, &str)]) -> Result<import::Desired, SourceError> {
    let host = deployment.host();
    let paths: Vec<_> = files.iter().map(|(name, text)| deployment.write(name, text)).collect();
    import::load_all(&paths, &host.config, &host.store)
}

fn error(files: &[(&str, &str)]) -> SourceError {
    let deployment = Deployment::quickstart();
    load(&deployment, files).expect_err("the files should be refused")
}

#[test]
fn identities_and_assignments_load_from_csv_and_an_import_is_kept_in_history() {
    let deployment = Deployment::quickstart();
    let desired = load(&deployment, &[("people.csv", PEOPLE), ("access.csv", ACCESS)]).unwrap();
    assert_eq!(desired.identities.len(), 2);
    let erin = &desired.identities[1];
    assert_eq!(erin.display_name, "Erin, the second", "a quoted cell keeps its comma");
    assert_eq!(erin.attributes.get("site").map(String::as_str), Some("Lyon"));
    assert!(!desired.identities[0].attributes.contains_key("site"), "an empty cell is no attribute");
    let dave_saas = &desired.assignments[0];
    assert_eq!(dave_saas.content.entitlements.iter().map(String::as_str).collect::<Vec<_>>(), ["Ops", "Users"]);
    assert_eq!(dave_saas.content.attributes.len(), 2, "{dave_saas:?}");
    assert_eq!(desired.assignments[1].valid_until, Some(1_893_456_000_000));
    let finance = &desired.assignments[2];
    assert_eq!(finance.content.attributes.get("group").map(String::as_str), Some("Finance-Approvers"));

    let mut host = deployment.host();
    let imported = desired.apply(&mut host, "import:people.csv,access.csv", false).unwrap();
    assert_eq!((imported.identities, imported.assignments, imported.unchanged), (2, 3, 0));
    let history = host.store.desired_history("Directory_User", "erin", None, 10).unwrap();
    assert_eq!(history.len(), 3, "erin and her two assignments: {history:?}");
    assert!(history.iter().all(|h| h.actor == "import:people.csv,access.csv"));
    // The same files again change nothing.
    let again = desired.apply(&mut host, "import:again", false).unwrap();
    assert_eq!(again.unchanged, 5);
    assert_eq!(host.store.desired_history("Directory_User", "erin", None, 10).unwrap().len(), 3);
}

#[test]
fn a_bad_line_or_cell_is_named_by_file_line_and_column() {
    // A line with a field too many.
    let e = error(&[("people.csv", "entity_type,key\nDirectory_User,dave\nDirectory_User,erin,extra\n")]);
    assert_eq!((e.file.file_name().unwrap().to_str(), e.position), (Some("people.csv"), Some((3, 1))), "{e}");
    assert!(e.message.contains("3 fields, but the header has 2"), "{e}");
    // An unknown resource type: its line and column.
    let e = error(&[("people.csv", PEOPLE), ("access.csv", &ACCESS.replace("erin,SaaS_Account", "erin,SaaS_Acount"))]);
    assert_eq!((e.file.file_name().unwrap().to_str(), e.position), (Some("access.csv"), Some((3, 2))), "{e}");
    assert!(e.message.contains("column `resource_type`") && e.message.contains("SaaS_Acount"), "{e}");
    assert!(e.to_string().starts_with(&format!("{}:3:2: ", e.file.display())), "{e}");
    // A date that is not one.
    let e = error(&[("people.csv", PEOPLE), ("access.csv", &ACCESS.replace("2030-01-01T00:00:00Z", "next year"))]);
    assert_eq!(e.position, Some((3, 4)), "{e}");
    assert!(e.message.contains("column `valid_until`") && e.message.contains("next year"), "{e}");
    // An identity neither file nor database knows.
    let e = error(&[("access.csv", ACCESS)]);
    assert_eq!(e.position, Some((2, 1)), "{e}");
    assert!(e.message.contains("no identity `dave`"), "{e}");
    // An empty key, an unknown entity type.
    let e = error(&[("people.csv", "entity_type,key\nDirectory_User,alice\nDirectory_User,  \n")]);
    assert_eq!(e.position, Some((3, 2)), "{e}");
    assert!(e.message.contains("column `key`: must not be empty"), "{e}");
    let e = error(&[("people.csv", "entity_type,key\nDirectory_Usr,zed\n")]);
    assert_eq!(e.position, Some((2, 1)), "{e}");
    // A record over two lines (a quoted newline) is named by the line it starts on.
    let e = error(&[("people.csv", "entity_type,key,display_name\nDirectory_User,a,\"two\nlines\"\nNope,b,x\n")]);
    assert_eq!(e.position, Some((4, 1)), "{e}");
    // Headers that say nothing usable.
    let e = error(&[("people.csv", "name,mail\nx,y\n")]);
    assert_eq!(e.position, Some((1, 1)), "{e}");
    assert!(e.message.contains("neither of identities"), "{e}");
    let e = error(&[("people.csv", "entity_type,key,key\nDirectory_User,a,b\n")]);
    assert_eq!(e.position, Some((1, 3)), "{e}");
    assert!(e.message.contains("`key` is there twice"), "{e}");
    // An attribute over its limit is named by its column.
    let long = "x".repeat(70_000);
    let e = error(&[("people.csv", &format!("entity_type,key,bio\nDirectory_User,a,{long}\n"))]);
    assert_eq!(e.position, Some((2, 3)), "{e}");
}
