CREATE OR REPLACE FUNCTION public.palate_split(p_study bigint, p_image bigint, p_annotator bigint)
 RETURNS text
 LANGUAGE plpgsql
 STABLE PARALLEL SAFE
AS $function$
DECLARE
    v_key text;
    u float8;
BEGIN
    -- annotation.splits.split_assign on (Image.sha256, Annotator.split_key);
    -- p_study is unused (kept for the callers' signature).
    SELECT CASE WHEN a.external_id <> '' THEN a.source || ':' || a.external_id
                ELSE a.public_id END
      INTO v_key FROM annotation_annotator a WHERE a.id = p_annotator;
    u := palate_split_key_unit('annotator', v_key);
    IF u < 0.05::float8 THEN RETURN 'val_unseen'; END IF;
    IF u < 0.05::float8 + 0.10::float8 THEN RETURN 'test_unseen'; END IF;
    SELECT i.sha256 INTO v_key FROM annotation_image i WHERE i.id = p_image;
    u := palate_split_key_unit('image', v_key);
    IF u < 0.11::float8 THEN RETURN 'val_seen'; END IF;
    IF u < 0.11::float8 + 0.17::float8 THEN RETURN 'test_seen'; END IF;
    RETURN 'train';
END
$function$

